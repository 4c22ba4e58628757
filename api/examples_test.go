package api_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/kakuremichi/kakuremichi/api"
)

// Every example manifest decodes strictly and validates, so the examples
// in the README can never rot.
func TestExampleManifests(t *testing.T) {
	files, err := filepath.Glob("../manifests/examples/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("got %d example files (err %v), want some", len(files), err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := api.DecodeManifests(data)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if len(objs) == 0 {
			t.Errorf("%s: got no objects, want at least one", f)
		}
		for _, o := range objs {
			o.Default()
			if err := api.Validate(o); err != nil {
				t.Errorf("%s: %s %s: %v", f, o.GetTypeMeta().Kind, o.GetMeta().Name, err)
			}
		}
	}
}
