// Package apiserver serves Control's REST API with echo:
// /apis/kakuremichi.io/v1alpha1/<plural>[/<name>][/status], list, get,
// create, update, merge-patch, delete and streaming watches, behind bearer
// token authentication with roles.
//
// It may import api, store and echo; it never touches etcd directly.
package apiserver
