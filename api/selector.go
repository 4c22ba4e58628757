package api

import (
	"fmt"
	"strings"
)

// Selector matches objects by their labels. The syntax is Kubernetes'
// equality-based one: "a=b", "a==b", "a!=b", "a" (exists), "!a" (absent),
// joined by commas; every term must hold.
type Selector struct {
	terms []selectorTerm
}

type selectorTerm struct {
	key   string
	op    string // "=", "!=", "exists", "!exists"
	value string
}

// ParseSelector parses a label selector; "" matches everything.
func ParseSelector(s string) (Selector, error) {
	var sel Selector
	for _, raw := range strings.Split(s, ",") {
		t := strings.TrimSpace(raw)
		if t == "" {
			continue
		}
		var term selectorTerm
		switch {
		case strings.Contains(t, "!="):
			k, v, _ := strings.Cut(t, "!=")
			term = selectorTerm{key: strings.TrimSpace(k), op: "!=", value: strings.TrimSpace(v)}
		case strings.Contains(t, "=="):
			k, v, _ := strings.Cut(t, "==")
			term = selectorTerm{key: strings.TrimSpace(k), op: "=", value: strings.TrimSpace(v)}
		case strings.Contains(t, "="):
			k, v, _ := strings.Cut(t, "=")
			term = selectorTerm{key: strings.TrimSpace(k), op: "=", value: strings.TrimSpace(v)}
		case strings.HasPrefix(t, "!"):
			term = selectorTerm{key: strings.TrimSpace(t[1:]), op: "!exists"}
		default:
			term = selectorTerm{key: t, op: "exists"}
		}
		if msg := checkQualifiedKey(term.key); msg != "" {
			return Selector{}, fmt.Errorf("label selector %q: %s", s, msg)
		}
		if !labelValueRE.MatchString(term.value) || len(term.value) > maxLabelValueLength {
			return Selector{}, fmt.Errorf("label selector %q: invalid value %q", s, term.value)
		}
		sel.terms = append(sel.terms, term)
	}
	return sel, nil
}

// Empty reports whether the selector matches everything.
func (s Selector) Empty() bool { return len(s.terms) == 0 }

// Matches reports whether labels satisfy every term.
func (s Selector) Matches(labels map[string]string) bool {
	for _, t := range s.terms {
		v, ok := labels[t.key]
		switch t.op {
		case "=":
			if !ok || v != t.value {
				return false
			}
		case "!=":
			if ok && v == t.value {
				return false
			}
		case "exists":
			if !ok {
				return false
			}
		case "!exists":
			if ok {
				return false
			}
		}
	}
	return true
}

// String returns the selector in its canonical text form.
func (s Selector) String() string {
	parts := make([]string, len(s.terms))
	for i, t := range s.terms {
		switch t.op {
		case "exists":
			parts[i] = t.key
		case "!exists":
			parts[i] = "!" + t.key
		default:
			parts[i] = t.key + t.op + t.value
		}
	}
	return strings.Join(parts, ",")
}
