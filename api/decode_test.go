package api_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/kakuremichi/kakuremichi/api"
)

const header = "apiVersion: kakuremichi.io/v1alpha1\nkind: Tunnel\nmetadata:\n  name: web\n"

func TestDecodeAndValidateErrorsNameTheField(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want string // substring of the error; "" = valid
	}{
		{"issue example", header + "  labels: {app: web}\nspec:\n  hostname: fuga.sample.com\n  agent: agent-home\n  target: http://localhost:8080\n", ""},
		{"unknown spec field", header + "spec:\n  hostnmae: x.example.com\n", "spec.hostnmae: unknown field"},
		{"unknown metadata field", header + "  lables: {a: b}\nspec: {}\n", "metadata.lables: unknown field"},
		{"unknown top-level field", header + "sepc: {}\n", "sepc: unknown field"},
		{"wrong type bool", header + "spec:\n  enabled: \"no\"\n", `spec.enabled: expected a boolean (true or false), got string "no"`},
		{"wrong type string", header + "spec:\n  hostname: [a, b]\n", "spec.hostname: expected a string, got a list"},
		{"wrong type labels", header + "  labels: [a]\nspec: {}\n", "metadata.labels: expected an object, got a list"},
		{"label value type", header + "  labels: {a: 1}\nspec: {}\n", "metadata.labels.a: expected a string, got number 1"},
		{"duplicate key", header + "spec:\n  agent: a\n  agent: b\n", `key "agent" already set`},
		{"malformed yaml", header + "spec: [\n", "malformed YAML"},
		{"unsupported scheme", header + "spec:\n  hostname: a.example.com\n  agent: a\n  target: ftp://x:21\n", `spec.target: unsupported scheme "ftp"`},
		{"tcp needs port", header + "spec:\n  hostname: a.example.com\n  agent: a\n  target: tcp://db\n", "spec.target:"},
		{"tcp needs publicPort", header + "spec:\n  hostname: a.example.com\n  agent: a\n  target: tcp://db:5432\n", "spec.publicPort: required"},
		{"http forbids publicPort", header + "spec:\n  hostname: a.example.com\n  agent: a\n  target: http://x:80\n  publicPort: 8080\n", "spec.publicPort:"},
		{"publicPort 443", header + "spec:\n  hostname: a.example.com\n  agent: a\n  target: tcp://db:5432\n  publicPort: 443\n", "spec.publicPort: 443"},
		{"skip verify on http", header + "spec:\n  hostname: a.example.com\n  agent: a\n  target: http://x:80\n  insecureSkipVerify: true\n", "spec.insecureSkipVerify:"},
		{"redirect on tcp", header + "spec:\n  hostname: a.example.com\n  agent: a\n  target: tcp://db:5432\n  publicPort: 5432\n  httpRedirect: false\n", "spec.httpRedirect: "},
		{"redirect not a boolean", header + "spec:\n  hostname: a.example.com\n  agent: a\n  target: http://x:80\n  httpRedirect: \"no\"\n", "spec.httpRedirect: expected a boolean"},
		{"target path", header + "spec:\n  hostname: a.example.com\n  agent: a\n  target: http://x:80/admin\n", "spec.target:"},
		{"missing hostname", header + "spec:\n  agent: a\n  target: http://x:80\n", "spec.hostname: required"},
		{"bad hostname", header + "spec:\n  hostname: Not_A_Host\n  agent: a\n  target: http://x:80\n", "spec.hostname:"},
		{"bad name", "apiVersion: kakuremichi.io/v1alpha1\nkind: Tunnel\nmetadata:\n  name: Web_1\nspec:\n  hostname: a.example.com\n  agent: a\n  target: http://x:80\n", "metadata.name:"},
		{"missing name", "apiVersion: kakuremichi.io/v1alpha1\nkind: Tunnel\nmetadata: {}\nspec:\n  hostname: a.example.com\n  agent: a\n  target: http://x:80\n", "metadata.name: required"},
		{"unknown kind", "apiVersion: kakuremichi.io/v1alpha1\nkind: Tunel\nmetadata: {name: a}\n", `kind: unknown kind "Tunel"`},
		{"wrong apiVersion", "apiVersion: v1\nkind: Tunnel\nmetadata: {name: a}\n", `apiVersion: "v1" is not supported`},
		{"bad label key", header + "  labels: {\"-x\": z}\nspec:\n  hostname: a.example.com\n  agent: a\n  target: http://x:80\n", "metadata.labels:"},
		{"gateway endpoint", "apiVersion: kakuremichi.io/v1alpha1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  publicEndpoint: nohost\n", "spec.publicEndpoint:"},
		{"gateway key", "apiVersion: kakuremichi.io/v1alpha1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  publicKey: abc\n", "spec.publicKey:"},
		{"token role", "apiVersion: kakuremichi.io/v1alpha1\nkind: Token\nmetadata: {name: t}\nspec:\n  role: root\n", `spec.role: unsupported role "root"`},
		{"not an object", "- a\n- b\n", "expected an object"},
		{"timestamp type", header + "  creationTimestamp: 5\nspec: {}\n", "metadata.creationTimestamp: expected a timestamp string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, err := api.DecodeManifests([]byte(tt.doc))
			if err == nil {
				for _, o := range objs {
					o.Default()
					if err = api.Validate(o); err != nil {
						break
					}
				}
			}
			if tt.want == "" {
				if err != nil {
					t.Fatalf("got error %v, want none", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("got no error, want one containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got error %q, want it to contain %q", err, tt.want)
			}
			if !errors.Is(err, api.ErrInvalid) {
				t.Errorf("got error %v that is not ErrInvalid", err)
			}
		})
	}
}

func TestDecodeManifestsStream(t *testing.T) {
	doc := "# comment only\n---\n" + header + "spec: {}\n---\n\n---\napiVersion: kakuremichi.io/v1alpha1\nkind: Agent\nmetadata: {name: a}\n"
	objs, err := api.DecodeManifests([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 || objs[0].GetTypeMeta().Kind != "Tunnel" || objs[1].GetTypeMeta().Kind != "Agent" {
		t.Fatalf("got %d objects, want a Tunnel then an Agent", len(objs))
	}
	bad := header + "spec: {}\n---\n" + header + "spec:\n  x: 1\n"
	_, err = api.DecodeManifests([]byte(bad))
	var de *api.DocumentError
	if !errors.As(err, &de) || de.Index != 2 {
		t.Fatalf("got %v, want a DocumentError for document 2", err)
	}
}

func TestDecodeRejectsOversizedDocuments(t *testing.T) {
	big := header + "  annotations:\n    a: \"" + strings.Repeat("x", api.MaxObjectBytes) + "\"\nspec: {}\n"
	_, err := api.DecodeManifests([]byte(big))
	if !errors.Is(err, api.ErrTooLarge) {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
}

func FuzzDecodeManifests(f *testing.F) {
	f.Add([]byte(header + "spec:\n  hostname: fuga.sample.com\n  agent: agent-home\n  target: http://localhost:8080\n"))
	f.Add([]byte("---\n- a\n---\nkind: Gateway\n"))
	f.Add([]byte("{\"apiVersion\":\"kakuremichi.io/v1alpha1\",\"kind\":\"Agent\",\"metadata\":{\"name\":\"a\"}}"))
	f.Add([]byte(header + "spec:\n  enabled: [1, {a: b}]\n  target: &a x\n  agent: *a\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, err := api.DecodeManifests(data)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("got an empty error message")
			}
			return
		}
		for _, o := range objs {
			o.Default()
			_ = api.Validate(o)
			c := api.Clone(o)
			if api.KeyOf(c) != api.KeyOf(o) {
				t.Fatalf("got clone key %v, want %v", api.KeyOf(c), api.KeyOf(o))
			}
		}
	})
}
