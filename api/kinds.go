package api

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// KindInfo describes one resource kind: its names in URLs and on the
// command line, and how to make an empty object of it.
type KindInfo struct {
	// Kind is the CamelCase name used in manifests ("Tunnel").
	Kind string
	// Plural is the lower-case name used in URLs ("tunnels").
	Plural string
	// Singular is the lower-case singular name ("tunnel").
	Singular string
	// ShortNames are the abbreviations kakuremichictl accepts ("tun").
	ShortNames []string
	// New returns a zero object of this kind with its TypeMeta set.
	New func() Object
}

// kinds is the fixed table of served kinds; it is never modified after
// package initialisation.
var kinds = []KindInfo{
	{Kind: "Tunnel", Plural: "tunnels", Singular: "tunnel", ShortNames: []string{"tun", "tunnel"},
		New: func() Object { return &Tunnel{TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: "Tunnel"}} }},
	{Kind: "Gateway", Plural: "gateways", Singular: "gateway", ShortNames: []string{"gw"},
		New: func() Object { return &Gateway{TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: "Gateway"}} }},
	{Kind: "Agent", Plural: "agents", Singular: "agent", ShortNames: []string{"ag"},
		New: func() Object { return &Agent{TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: "Agent"}} }},
	{Kind: "Token", Plural: "tokens", Singular: "token", ShortNames: []string{"tok"},
		New: func() Object { return &Token{TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: "Token"}} }},
	{Kind: "APIKey", Plural: "apikeys", Singular: "apikey", ShortNames: []string{"key"},
		New: func() Object { return &APIKey{TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: "APIKey"}} }},
}

// Kinds returns every served kind, in a stable order.
func Kinds() []KindInfo {
	out := make([]KindInfo, len(kinds))
	copy(out, kinds)
	return out
}

// LookupKind finds a kind by its Kind, plural, singular or short name,
// case-insensitively.
func LookupKind(name string) (KindInfo, bool) {
	n := strings.ToLower(name)
	for _, k := range kinds {
		if strings.ToLower(k.Kind) == n || k.Plural == n || k.Singular == n {
			return k, true
		}
		for _, s := range k.ShortNames {
			if s == n {
				return k, true
			}
		}
	}
	return KindInfo{}, false
}

// KindNames returns the plural names of every kind, sorted, for messages.
func KindNames() []string {
	var names []string
	for _, k := range kinds {
		names = append(names, k.Plural)
	}
	sort.Strings(names)
	return names
}

// New returns an empty object of the named kind.
func New(kind string) (Object, error) {
	k, ok := LookupKind(kind)
	if !ok {
		return nil, fmt.Errorf("unknown kind %q (known: %s)", kind, strings.Join(KindNames(), ", "))
	}
	return k.New(), nil
}

// Clone returns a deep copy of obj. Objects read from a cache are shared
// and must be cloned before they are changed.
func Clone[T Object](obj T) T {
	data, err := json.Marshal(obj)
	if err != nil {
		panic(fmt.Sprintf("api: marshal %T: %v", obj, err))
	}
	out, err := New(obj.GetTypeMeta().Kind)
	if err != nil {
		panic(fmt.Sprintf("api: clone: %v", err))
	}
	if err := json.Unmarshal(data, out); err != nil {
		panic(fmt.Sprintf("api: unmarshal %T: %v", obj, err))
	}
	return out.(T)
}

// List is the body of a list response.
type List struct {
	TypeMeta `json:",inline"`
	Metadata ListMeta          `json:"metadata"`
	Items    []json.RawMessage `json:"items"`
}

// ListMeta carries the revision a list was read at: a watch started from
// it misses nothing and repeats nothing.
type ListMeta struct {
	ResourceVersion string `json:"resourceVersion"`
}

// DecodeObject decodes a stored or served object of a known kind. It is
// lenient about unknown fields so that a newer server's objects still
// decode; manifests written by people go through Decode instead.
func DecodeObject(data []byte) (Object, error) {
	var tm TypeMeta
	if err := json.Unmarshal(data, &tm); err != nil {
		return nil, fmt.Errorf("decode object: %w", err)
	}
	obj, err := New(tm.Kind)
	if err != nil {
		return nil, fmt.Errorf("decode object: %w", err)
	}
	if err := json.Unmarshal(data, obj); err != nil {
		return nil, fmt.Errorf("decode %s: %w", tm.Kind, err)
	}
	return obj, nil
}

// WatchEventType says what happened to the object of a watch event.
type WatchEventType string

// The watch event types. Error carries a Status as its object; Bookmark
// carries only a resourceVersion that the watcher has caught up to.
const (
	Added    WatchEventType = "ADDED"
	Modified WatchEventType = "MODIFIED"
	Deleted  WatchEventType = "DELETED"
	Bookmark WatchEventType = "BOOKMARK"
	Error    WatchEventType = "ERROR"
)

// WatchEvent is one line of a watch stream (newline-delimited JSON).
type WatchEvent struct {
	Type   WatchEventType  `json:"type"`
	Object json.RawMessage `json:"object"`
}
