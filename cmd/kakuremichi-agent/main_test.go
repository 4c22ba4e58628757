package main

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
)

// TestLean: the agent binary links neither Control nor etcd, which is its
// reason to exist.
func TestLean(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, forbidden := range []string{"go.etcd.io/etcd/server", "/internal/control", "/internal/apiserver", "/store"} {
		for _, p := range strings.Fields(string(out)) {
			if strings.Contains(p, forbidden) {
				t.Errorf("kakuremichi-agent links %s", p)
			}
		}
	}
}

// TestCommands: version and help answer; a bad flag is refused with the
// flag named, as `kakuremichi agent` does.
func TestCommands(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"version"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "kakuremichi-agent ") {
		t.Errorf("version: %d %q", code, out.String())
	}
	out.Reset()
	if code := run(context.Background(), []string{"--no-such-flag"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "no-such-flag") {
		t.Errorf("bad flag: code %d, stderr %q", code, errb.String())
	}
}
