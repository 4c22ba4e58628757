// Package api defines kakuremichi's resources: their Go types, defaulting,
// validation, strict decoding from YAML or JSON, label selectors, conditions
// and the wire shapes of the REST API (errors and watch events).
//
// It is imported by every binary, so it imports neither etcd nor echo nor
// any other package of this module: only the standard library and
// sigs.k8s.io/yaml.
package api
