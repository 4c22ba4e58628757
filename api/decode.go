package api

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// MaxObjectBytes is the largest single object (one YAML or JSON document)
// that is accepted. etcd refuses values much larger than this anyway.
const MaxObjectBytes = 1 << 20

// DocumentError is a decoding error in one document of a manifest stream.
type DocumentError struct {
	// Index is the document's position in the stream, counting from 1.
	Index int
	// Err says what is wrong; an ErrorList names field paths.
	Err error
}

// Error returns "document N: ...".
func (e *DocumentError) Error() string { return fmt.Sprintf("document %d: %v", e.Index, e.Err) }

// Unwrap returns the underlying error.
func (e *DocumentError) Unwrap() error { return e.Err }

// DecodeManifests strictly decodes a stream of YAML (or JSON) documents
// separated by "---" lines. Empty documents are skipped. Unknown fields,
// wrong types, duplicate keys, unknown kinds and oversized documents are
// errors that name the field path; decoding stops at the first bad
// document. Objects are neither defaulted nor validated.
func DecodeManifests(data []byte) ([]Object, error) {
	docs, err := splitDocuments(data)
	if err != nil {
		return nil, err
	}
	var out []Object
	for i, doc := range docs {
		obj, err := Decode(doc)
		if err == errEmptyDocument {
			continue
		}
		if err != nil {
			return nil, &DocumentError{Index: i + 1, Err: err}
		}
		out = append(out, obj)
	}
	return out, nil
}

var errEmptyDocument = fmt.Errorf("empty document")

// Decode strictly decodes one YAML or JSON document into an object of the
// kind it names.
func Decode(doc []byte) (Object, error) {
	if len(doc) > MaxObjectBytes {
		return nil, fmt.Errorf("%w: the document is %d bytes, more than the limit of %d", ErrTooLarge, len(doc), MaxObjectBytes)
	}
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, ErrorList{{Type: FieldInvalid, Detail: cleanYAMLError(err)}}
	}
	js = bytes.TrimSpace(js)
	if len(js) == 0 || string(js) == "null" {
		return nil, errEmptyDocument
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	var raw any
	if err := dec.Decode(&raw); err != nil {
		return nil, ErrorList{{Type: FieldInvalid, Detail: "not a valid document: " + err.Error()}}
	}
	m, ok := raw.(map[string]any)
	if !ok {
		return nil, ErrorList{{Type: FieldTypeInvalid, Detail: fmt.Sprintf("expected an object with apiVersion, kind, metadata and spec, got %s", describeJSON(raw))}}
	}
	kind, _ := m["kind"].(string)
	if kind == "" {
		return nil, ErrorList{required("kind", "one of "+strings.Join(kindList(), ", "))}
	}
	k, found := kindByExactName(kind)
	if !found {
		return nil, ErrorList{{Type: FieldNotSupported, Field: "kind", Detail: fmt.Sprintf("unknown kind %q (known: %s)", kind, strings.Join(kindList(), ", "))}}
	}
	if av, _ := m["apiVersion"].(string); av != APIVersion {
		if av == "" {
			return nil, ErrorList{required("apiVersion", APIVersion)}
		}
		return nil, ErrorList{invalid("apiVersion", "%q is not supported (use %s)", av, APIVersion)}
	}
	obj := k.New()
	var errs ErrorList
	checkValue("", raw, reflect.TypeOf(obj).Elem(), &errs)
	if len(errs) > 0 {
		return nil, errs
	}
	strict := json.NewDecoder(bytes.NewReader(js))
	strict.DisallowUnknownFields()
	if err := strict.Decode(obj); err != nil {
		return nil, ErrorList{{Type: FieldInvalid, Detail: err.Error()}}
	}
	return obj, nil
}

func kindByExactName(kind string) (KindInfo, bool) {
	for _, k := range kinds {
		if k.Kind == kind {
			return k, true
		}
	}
	return KindInfo{}, false
}

func kindList() []string {
	var out []string
	for _, k := range kinds {
		out = append(out, k.Kind)
	}
	return out
}

// splitDocuments splits a YAML stream on "---" separator lines.
func splitDocuments(data []byte) ([][]byte, error) {
	var docs [][]byte
	var cur bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), MaxObjectBytes+1)
	for sc.Scan() {
		line := sc.Bytes()
		if bytes.HasPrefix(line, []byte("---")) && len(bytes.TrimSpace(line[3:])) == 0 {
			docs = append(docs, bytes.Clone(cur.Bytes()))
			cur.Reset()
			continue
		}
		if cur.Len()+len(line) > MaxObjectBytes {
			return nil, &DocumentError{Index: len(docs) + 1, Err: fmt.Errorf("%w: the document is larger than the limit of %d bytes", ErrTooLarge, MaxObjectBytes)}
		}
		cur.Write(line)
		cur.WriteByte('\n')
	}
	if err := sc.Err(); err != nil {
		return nil, &DocumentError{Index: len(docs) + 1, Err: fmt.Errorf("%w: a line is longer than %d bytes", ErrTooLarge, MaxObjectBytes)}
	}
	docs = append(docs, cur.Bytes())
	return docs, nil
}

func cleanYAMLError(err error) string {
	s := err.Error()
	s = strings.TrimPrefix(s, "error converting YAML to JSON: ")
	s = strings.TrimPrefix(s, "yaml: ")
	s = strings.Join(strings.Fields(s), " ")
	return "malformed YAML: " + s
}

var timeType = reflect.TypeOf(time.Time{})

// checkValue walks a decoded JSON value against the Go type it will be
// decoded into and records every unknown field and wrong type with its
// path, which encoding/json alone does not report.
func checkValue(path string, v any, t reflect.Type, errs *ErrorList) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if v == nil {
		return
	}
	mismatch := func(want string) {
		*errs = append(*errs, FieldError{Type: FieldTypeInvalid, Field: path,
			Detail: fmt.Sprintf("expected %s, got %s", want, describeJSON(v))})
	}
	if t == timeType {
		s, ok := v.(string)
		if !ok {
			mismatch("a timestamp string")
			return
		}
		if _, err := time.Parse(time.RFC3339, s); err != nil {
			*errs = append(*errs, invalid(path, "%q is not an RFC 3339 timestamp", s))
		}
		return
	}
	if t == reflect.TypeOf(json.RawMessage(nil)) {
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			mismatch("an object")
			return
		}
		fields := jsonFields(t)
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			ft, ok := fields[k]
			if !ok {
				*errs = append(*errs, FieldError{Type: FieldUnknown, Field: join(path, k), Detail: "unknown field"})
				continue
			}
			checkValue(join(path, k), m[k], ft, errs)
		}
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			mismatch("an object")
			return
		}
		for k, e := range m {
			checkValue(join(path, k), e, t.Elem(), errs)
		}
	case reflect.Slice:
		l, ok := v.([]any)
		if !ok {
			mismatch("a list")
			return
		}
		for i, e := range l {
			checkValue(fmt.Sprintf("%s[%d]", path, i), e, t.Elem(), errs)
		}
	case reflect.String:
		if _, ok := v.(string); !ok {
			mismatch("a string")
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			mismatch("a boolean (true or false)")
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := v.(json.Number)
		if !ok {
			mismatch("an integer")
			return
		}
		if _, err := n.Int64(); err != nil {
			mismatch("an integer")
		}
	case reflect.Float32, reflect.Float64:
		if _, ok := v.(json.Number); !ok {
			mismatch("a number")
		}
	}
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

// jsonFields maps the JSON names of t's fields to their types, flattening
// embedded structs as encoding/json does.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			for k, v := range jsonFields(ft) {
				out[k] = v
			}
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

func describeJSON(v any) string {
	switch x := v.(type) {
	case string:
		if len(x) > 40 {
			x = x[:40] + "..."
		}
		return fmt.Sprintf("string %q", x)
	case bool:
		return fmt.Sprintf("boolean %v", x)
	case json.Number:
		return "number " + x.String()
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	default:
		return fmt.Sprintf("%T", v)
	}
}
