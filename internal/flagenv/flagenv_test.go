package flagenv

import (
	"flag"
	"io"
	"strings"
	"testing"
)

func TestEnvironmentAndFlags(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		want    string
		wantErr string
	}{
		{"default", nil, nil, "./data", ""},
		{"env", map[string]string{"KAKUREMICHI_DATA_DIR": "/srv"}, nil, "/srv", ""},
		{"flag wins over env", map[string]string{"KAKUREMICHI_DATA_DIR": "/srv"}, []string{"--data-dir", "/x"}, "/x", ""},
		{"bad env value", map[string]string{"KAKUREMICHI_PORT": "eighty"}, nil, "", "KAKUREMICHI_PORT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			fs := flag.NewFlagSet("x", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			dir := fs.String("data-dir", "./data", "")
			fs.Int("port", 80, "")
			err := Parse(fs, "KAKUREMICHI_", tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want an error naming %s", err, tt.wantErr)
				}
				return
			}
			if err != nil || *dir != tt.want {
				t.Fatalf("got %q %v, want %q", *dir, err, tt.want)
			}
		})
	}
	if got := EnvName("KAKUREMICHI_", "etcd-ca-file"); got != "KAKUREMICHI_ETCD_CA_FILE" {
		t.Fatalf("got %s, want KAKUREMICHI_ETCD_CA_FILE", got)
	}
}
