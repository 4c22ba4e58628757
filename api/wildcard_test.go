package api

import (
	"strings"
	"testing"
)

// TestWildcardHostnames: a tunnel or certificate hostname may be one "*"
// as the whole first label over a name of two labels or more; any other
// "*" is refused with the field path and the value.
func TestWildcardHostnames(t *testing.T) {
	for _, tt := range []struct {
		host string
		ok   bool
	}{
		{"*.example.com", true},
		{"*.a.example.com", true},
		{"*.com", false},
		{"a.*.example.com", false},
		{"*a.example.com", false},
		{"**.example.com", false},
		{"*", false},
	} {
		tun := &Tunnel{TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: "Tunnel"}, Metadata: ObjectMeta{Name: "t"},
			Spec: TunnelSpec{Hostname: tt.host, Agent: "a", Target: "http://127.0.0.1:80"}}
		cert := &Certificate{TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: "Certificate"}, Metadata: ObjectMeta{Name: "c"},
			Spec: CertificateSpec{Hostname: tt.host}}
		for _, obj := range []Object{tun, cert} {
			err := Validate(obj)
			if tt.ok && err != nil {
				t.Errorf("%T %q: got %v, want valid", obj, tt.host, err)
			}
			if !tt.ok && (err == nil || !strings.Contains(err.Error(), "spec.hostname") || !strings.Contains(err.Error(), tt.host)) {
				t.Errorf("%T %q: got %v, want an error naming spec.hostname and the value", obj, tt.host, err)
			}
		}
	}
	if n := CertificateName("*.example.com"); ValidateName(n) != nil || n == CertificateName("wildcard.example.com") {
		t.Errorf("CertificateName(*.example.com): got %q, want a valid name distinct from wildcard.example.com's", n)
	}
}
