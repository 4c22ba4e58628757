package api

import (
	"fmt"
	"regexp"
	"strings"
)

// Limits on metadata, so one object cannot bloat the store.
const (
	maxNameLength       = 63
	maxHostnameLength   = 253
	maxLabelValueLength = 63
	maxAnnotationsBytes = 256 << 10
	maxFinalizers       = 32
	maxOwnerReferences  = 32
)

var (
	nameRE       = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	hostLabelRE  = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	labelValueRE = regexp.MustCompile(`^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$`)
	qualifiedRE  = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
)

// checkName returns why n is not a valid object name, or "".
func checkName(n string) string {
	if len(n) > maxNameLength {
		return fmt.Sprintf("is longer than %d characters", maxNameLength)
	}
	if !nameRE.MatchString(n) {
		return "must be lower-case letters, digits and '-', starting and ending with a letter or digit"
	}
	return ""
}

// ValidateName checks an object name; the error names the field.
func ValidateName(n string) error {
	if n == "" {
		return ErrorList{required("metadata.name", "a name for the object")}
	}
	if msg := checkName(n); msg != "" {
		return ErrorList{invalid("metadata.name", "%q %s", n, msg)}
	}
	return nil
}

// checkHostname returns why h is not a valid public hostname, or "".
func checkHostname(h string) string {
	if len(h) > maxHostnameLength {
		return fmt.Sprintf("is longer than %d characters", maxHostnameLength)
	}
	labels := strings.Split(h, ".")
	if len(labels) < 2 {
		return "must be a fully qualified DNS name such as app.example.com"
	}
	for _, l := range labels {
		if strings.Contains(l, "*") {
			return fmt.Sprintf("has %q: a wildcard is only allowed as the whole first label of a tunnel or certificate hostname, as in *.example.com", l)
		}
		if len(l) > 63 || !hostLabelRE.MatchString(l) {
			return fmt.Sprintf("has an invalid DNS label %q", l)
		}
	}
	return ""
}

// checkHostnameOrWildcard is checkHostname that also takes a wildcard,
// "*.example.com": it covers exactly one label in front of a name of at
// least two labels.
func checkHostnameOrWildcard(h string) string {
	if rest, ok := strings.CutPrefix(h, "*."); ok {
		if len(strings.Split(rest, ".")) < 2 {
			return "is a wildcard over a top-level domain: it must cover a name of at least two labels, such as *.example.com"
		}
		return checkHostname(rest)
	}
	return checkHostname(h)
}

// checkQualifiedKey checks a label or annotation key: name or prefix/name.
func checkQualifiedKey(k string) string {
	prefix, name, hasPrefix := strings.Cut(k, "/")
	if !hasPrefix {
		name, prefix = prefix, ""
	}
	if hasPrefix && (prefix == "" || checkHostname(prefix) != "" && !hostLabelRE.MatchString(prefix)) {
		return fmt.Sprintf("key %q has an invalid prefix: it must be a DNS name", k)
	}
	if name == "" || len(name) > 63 || !qualifiedRE.MatchString(name) {
		return fmt.Sprintf("key %q must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit, optionally prefixed by a DNS name and '/'", k)
	}
	return ""
}

// Validate checks an object written by a client: its type, its metadata
// and its spec. Every problem is reported with its field path.
func Validate(obj Object) error {
	var errs ErrorList
	tm := obj.GetTypeMeta()
	if tm.APIVersion != APIVersion {
		errs = append(errs, invalid("apiVersion", "%q is not supported (use %s)", tm.APIVersion, APIVersion))
	}
	m := obj.GetMeta()
	if m.Name == "" {
		errs = append(errs, required("metadata.name", "a name for the object"))
	} else if msg := checkName(m.Name); msg != "" {
		errs = append(errs, invalid("metadata.name", "%q %s", m.Name, msg))
	}
	if m.Namespace != "" {
		errs = append(errs, FieldError{Type: FieldForbidden, Field: "metadata.namespace",
			Detail: "namespaces are not supported yet; leave it out"})
	}
	for k, v := range m.Labels {
		if msg := checkQualifiedKey(k); msg != "" {
			errs = append(errs, invalid("metadata.labels", "%s", msg))
		}
		if len(v) > maxLabelValueLength || !labelValueRE.MatchString(v) {
			errs = append(errs, invalid("metadata.labels."+k, "value %q must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit", v))
		}
	}
	size := 0
	for k, v := range m.Annotations {
		if msg := checkQualifiedKey(k); msg != "" {
			errs = append(errs, invalid("metadata.annotations", "%s", msg))
		}
		size += len(k) + len(v)
	}
	if size > maxAnnotationsBytes {
		errs = append(errs, FieldError{Type: FieldTooLong, Field: "metadata.annotations",
			Detail: fmt.Sprintf("annotations take %d bytes, more than the limit of %d", size, maxAnnotationsBytes)})
	}
	if len(m.Finalizers) > maxFinalizers {
		errs = append(errs, FieldError{Type: FieldTooLong, Field: "metadata.finalizers", Detail: fmt.Sprintf("more than %d finalizers", maxFinalizers)})
	}
	seen := map[string]bool{}
	for i, f := range m.Finalizers {
		if msg := checkQualifiedKey(f); msg != "" {
			errs = append(errs, invalid(fmt.Sprintf("metadata.finalizers[%d]", i), "%s", msg))
		}
		if seen[f] {
			errs = append(errs, FieldError{Type: FieldDuplicate, Field: fmt.Sprintf("metadata.finalizers[%d]", i), Detail: fmt.Sprintf("%q is listed twice", f)})
		}
		seen[f] = true
	}
	if len(m.OwnerReferences) > maxOwnerReferences {
		errs = append(errs, FieldError{Type: FieldTooLong, Field: "metadata.ownerReferences", Detail: fmt.Sprintf("more than %d owners", maxOwnerReferences)})
	}
	for i, o := range m.OwnerReferences {
		p := fmt.Sprintf("metadata.ownerReferences[%d]", i)
		if o.APIVersion != APIVersion {
			errs = append(errs, invalid(p+".apiVersion", "%q is not supported (use %s)", o.APIVersion, APIVersion))
		}
		if _, ok := LookupKind(o.Kind); !ok || o.Kind == "" {
			errs = append(errs, FieldError{Type: FieldNotSupported, Field: p + ".kind", Detail: fmt.Sprintf("unknown kind %q", o.Kind)})
		}
		if msg := checkName(o.Name); msg != "" {
			errs = append(errs, invalid(p+".name", "%q %s", o.Name, msg))
		}
		if o.UID == "" {
			errs = append(errs, required(p+".uid", "the owner's metadata.uid"))
		}
	}
	errs = append(errs, obj.ValidateSpec()...)
	return errs.OrNil()
}
