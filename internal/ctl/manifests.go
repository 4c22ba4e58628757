package ctl

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/kakuremichi/kakuremichi/api"
)

// manifest is one object read from a file, with where it came from.
type manifest struct {
	obj    api.Object
	file   string
	doc    int
	source string // "tunnel.yaml: document 2 (Tunnel web)"
}

// manifestExts are the files a directory contributes.
var manifestExts = map[string]bool{".yaml": true, ".yml": true, ".json": true}

// manifestFiles expands -f arguments: "-" is stdin, a directory is every
// manifest file under it, recursively, in lexical order.
func manifestFiles(paths []string) ([]string, error) {
	var out []string
	stdin := false
	for _, p := range paths {
		if p == "-" {
			if stdin {
				return nil, usagef("-f - given twice: stdin can be read only once")
			}
			stdin = true
			out = append(out, p)
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("read manifests: %w", err)
		}
		if !fi.IsDir() {
			out = append(out, p)
			continue
		}
		found := 0
		err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() && manifestExts[strings.ToLower(filepath.Ext(path))] {
				out = append(out, path)
				found++
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("read manifests in %s: %w", p, err)
		}
		if found == 0 {
			return nil, fmt.Errorf("read manifests: %s holds no .yaml, .yml or .json file", p)
		}
	}
	return out, nil
}

// splitDocuments splits a YAML stream where api.DecodeManifests does, on
// "---" lines, so a document's index here is its index there.
func splitDocuments(data []byte) ([][]byte, error) {
	var docs [][]byte
	var cur bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), api.MaxObjectBytes+1)
	for sc.Scan() {
		line := sc.Bytes()
		if bytes.HasPrefix(line, []byte("---")) && len(bytes.TrimSpace(line[3:])) == 0 {
			docs = append(docs, bytes.Clone(cur.Bytes()))
			cur.Reset()
			continue
		}
		cur.Write(line)
		cur.WriteByte('\n')
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("document %d: a line is longer than %d bytes", len(docs)+1, api.MaxObjectBytes)
	}
	return append(docs, cur.Bytes()), nil
}

// readManifests reads, decodes strictly, defaults and (when validate is
// set) validates every object of the given files. Every problem of every
// document is reported, each naming its file, document and field, before
// anything is sent to the server.
func (c *cli) readManifests(paths []string, validate bool) ([]manifest, error) {
	if len(paths) == 0 {
		return nil, usagef("no manifests given: use -f FILE, -f DIR or -f -")
	}
	files, err := manifestFiles(paths)
	if err != nil {
		return nil, err
	}
	var out []manifest
	var problems lineErrors
	seen := map[string]string{}
	for _, f := range files {
		name := f
		var data []byte
		if f == "-" {
			name = "stdin"
			data, err = io.ReadAll(c.stdin)
		} else {
			data, err = os.ReadFile(f)
		}
		if err != nil {
			return nil, fmt.Errorf("read manifests: %w", err)
		}
		docs, err := splitDocuments(data)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		for i, doc := range docs {
			m, errs := decodeDocument(name, i+1, doc, validate)
			problems = append(problems, errs...)
			if m == nil {
				continue
			}
			key := ref(m.obj)
			if prev, dup := seen[key]; dup {
				problems = append(problems, fmt.Sprintf("%s: %s is also defined in %s", m.source, key, prev))
				continue
			}
			seen[key] = m.source
			out = append(out, *m)
		}
	}
	if len(problems) > 0 {
		return nil, problems
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no objects found in %s", strings.Join(paths, ", "))
	}
	return out, nil
}

// decodeDocument decodes one document; an empty one yields nothing.
func decodeDocument(file string, index int, doc []byte, validate bool) (*manifest, lineErrors) {
	where := fmt.Sprintf("%s: document %d", file, index)
	objs, err := api.DecodeManifests(doc)
	if err != nil {
		var de *api.DocumentError
		if errors.As(err, &de) {
			err = de.Err
		}
		return nil, fieldProblems(where, err)
	}
	if len(objs) == 0 {
		return nil, nil
	}
	obj := objs[0]
	m := &manifest{obj: obj, file: file, doc: index,
		source: fmt.Sprintf("%s (%s %s)", where, obj.GetTypeMeta().Kind, obj.GetMeta().Name)}
	if obj.GetMeta().Name == "" {
		m.source = fmt.Sprintf("%s (%s)", where, obj.GetTypeMeta().Kind)
	}
	obj.Default()
	if !validate {
		if err := api.ValidateName(obj.GetMeta().Name); err != nil {
			return nil, fieldProblems(m.source, err)
		}
		return m, nil
	}
	if err := api.Validate(obj); err != nil {
		return nil, fieldProblems(m.source, err)
	}
	return m, nil
}

// fieldProblems gives each field error of err its own line.
func fieldProblems(where string, err error) lineErrors {
	var list api.ErrorList
	if errors.As(err, &list) && len(list) > 0 {
		out := make(lineErrors, len(list))
		for i, fe := range list {
			out[i] = where + ": " + fe.Error()
		}
		return out
	}
	return lineErrors{where + ": " + err.Error()}
}
