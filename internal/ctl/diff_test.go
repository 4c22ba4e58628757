package ctl

import (
	"bytes"
	"strings"
	"testing"

	"github.com/kakuremichi/kakuremichi/api"
)

func TestDiffExitCodes(t *testing.T) {
	e := newTestEnv(t)
	dir := t.TempDir()
	f := writeFile(t, dir, "web.yaml", tunnelYAML("web", "http://localhost:8080", "app=web"))
	if r := e.as(t, editorToken, "", "apply", "-f", f); r.code != 0 {
		t.Fatalf("apply: %q", r.stderr)
	}

	r := e.as(t, editorToken, "", "diff", "-f", f)
	if r.code != 0 || r.stdout != "" {
		t.Fatalf("diff of the applied manifest: got code %d stdout %q stderr %q, want 0 and nothing", r.code, r.stdout, r.stderr)
	}

	writeFile(t, dir, "web.yaml", tunnelYAML("web", "http://localhost:9090", "app=web"))
	rev := e.srv.Revision()
	r = e.as(t, editorToken, "", "diff", "-f", f)
	if r.code != 1 {
		t.Fatalf("diff of a change: got code %d stderr %q, want 1", r.code, r.stderr)
	}
	for _, want := range []string{
		"--- live/tunnel/web\n+++ merged/tunnel/web\n",
		"-  generation: 1\n+  generation: 2\n",
		"-  target: http://localhost:8080\n+  target: http://localhost:9090\n",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("got diff %q, want it to contain %q", r.stdout, want)
		}
	}
	if strings.Contains(r.stdout, "resourceVersion") {
		t.Errorf("got diff %q, want resourceVersion ignored", r.stdout)
	}
	if e.srv.Revision() != rev {
		t.Errorf("diff wrote to the server: revision %d → %d, want unchanged", rev, e.srv.Revision())
	}

	// An object absent from the server is all added.
	g := writeFile(t, dir, "new.yaml", tunnelYAML("fresh", "tcp://db:5432"))
	r = e.as(t, editorToken, "", "diff", "-f", g)
	if r.code != 1 || !strings.HasPrefix(r.stdout, "--- live/tunnel/fresh\n+++ merged/tunnel/fresh\n@@ -0,0 +1,") {
		t.Fatalf("diff of a new object: got code %d stdout %q, want an all-added diff", r.code, r.stdout)
	}
	for _, line := range splitLines(r.stdout)[3:] {
		if !strings.HasPrefix(line, "+") {
			t.Errorf("diff of a new object: got line %q, want only added lines", line)
		}
	}

	bad := writeFile(t, dir, "bad.yaml", tunnelYAML("web", "ftp://x:1"))
	if r = e.as(t, editorToken, "", "diff", "-f", bad); r.code != 2 {
		t.Fatalf("diff of a bad manifest: got code %d stderr %q, want 2", r.code, r.stderr)
	}
	if r = e.as(t, "wrong", "", "diff", "-f", f); r.code != 2 {
		t.Fatalf("diff refused by the server: got code %d stderr %q, want 2", r.code, r.stderr)
	}
}

func TestUnifiedDiff(t *testing.T) {
	tests := []struct {
		name string
		a, b string
		want string
	}{
		{"equal", "a\nb\n", "a\nb\n", ""},
		{"one change", "a\nb\nc\n", "a\nB\nc\n", "--- x\n+++ y\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n"},
		{"all added", "", "a\nb\n", "--- x\n+++ y\n@@ -0,0 +1,2 @@\n+a\n+b\n"},
		{"all deleted", "a\n", "", "--- x\n+++ y\n@@ -1,1 +0,0 @@\n-a\n"},
		{"insert in middle", "1\n2\n3\n4\n5\n6\n7\n8\n9\n", "1\n2\n3\n4\nnew\n5\n6\n7\n8\n9\n",
			"--- x\n+++ y\n@@ -2,6 +2,7 @@\n 2\n 3\n 4\n+new\n 5\n 6\n 7\n"},
		{"two hunks", "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\n12\n", "X\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\nY\n",
			"--- x\n+++ y\n@@ -1,4 +1,4 @@\n-1\n+X\n 2\n 3\n 4\n@@ -9,4 +9,4 @@\n 9\n 10\n 11\n-12\n+Y\n"},
		{"close changes share a hunk", "1\n2\n3\n4\n5\n", "A\n2\n3\n4\nE\n",
			"--- x\n+++ y\n@@ -1,5 +1,5 @@\n-1\n+A\n 2\n 3\n 4\n-5\n+E\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			changed, err := writeUnifiedDiff(&buf, "x", "y", splitLines(tt.a), splitLines(tt.b), 3)
			if err != nil {
				t.Fatal(err)
			}
			if changed != (tt.want != "") || buf.String() != tt.want {
				t.Fatalf("got changed=%v\n%s\nwant\n%s", changed, buf.String(), tt.want)
			}
		})
	}
}

// The edit script is minimal: it keeps a longest common subsequence.
func TestDiffLinesIsMinimal(t *testing.T) {
	a := strings.Split("a b c a b b a", " ")
	b := strings.Split("c b a b a c", " ")
	ops := diffLines(a, b)
	kept, outA, outB := 0, []string{}, []string{}
	for _, op := range ops {
		switch op.kind {
		case opEqual:
			kept++
			outA, outB = append(outA, a[op.ai]), append(outB, b[op.bi])
		case opDelete:
			outA = append(outA, a[op.ai])
		case opInsert:
			outB = append(outB, b[op.bi])
		}
	}
	if strings.Join(outA, " ") != strings.Join(a, " ") || strings.Join(outB, " ") != strings.Join(b, " ") {
		t.Fatalf("got script rebuilding %v and %v, want %v and %v", outA, outB, a, b)
	}
	if kept != 4 { // LCS of the classic example is 4 long
		t.Fatalf("got %d lines kept, want 4", kept)
	}
}

func TestComparableDropsServerFields(t *testing.T) {
	tn := seedTunnel("web", timeAgo(0), nil, api.Condition{Type: "Ready", Status: "True"})
	tn.Metadata.ResourceVersion = "42"
	out, err := comparable(tn)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "resourceVersion") || strings.Contains(out, "status") || !strings.Contains(out, "hostname: web.example.com") {
		t.Fatalf("got %q, want the object without resourceVersion and status", out)
	}
}
