package nodeclient

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
	"sort"
	"strconv"

	"github.com/kakuremichi/kakuremichi/api/bridge"
)

// encoded keeps the JSON of every item of the slice a node holds, in key
// order, so that a delta costs only its own items: the digest and the
// saved file reuse the encoding of the rest. A gateway of a large fleet
// holds thousands of peers and gets a delta for each one that comes.
type encoded struct {
	keys []string          // sorted
	json map[string][]byte // by key
}

// encode encodes every item of s.
func encode(s bridge.Slice) *encoded {
	e := &encoded{keys: make([]string, 0, len(s)), json: make(map[string][]byte, len(s))}
	for k, it := range s {
		e.keys = append(e.keys, k)
		e.json[k], _ = json.Marshal(it)
	}
	sort.Strings(e.keys)
	return e
}

// apply applies m to e in place and returns it; a Snapshot (or a nil e)
// gives a new encoding. Only the items of a Delta are encoded, and only a
// key that comes or goes moves others in key order.
func (e *encoded) apply(m bridge.Message) *encoded {
	if m.Type == bridge.Snapshot || e == nil {
		s := bridge.Slice{}
		for _, it := range m.Items {
			s[it.Key] = it
		}
		return encode(s)
	}
	for _, k := range m.Deleted {
		if _, ok := e.json[k]; !ok {
			continue
		}
		delete(e.json, k)
		if i, found := slices.BinarySearch(e.keys, k); found {
			e.keys = slices.Delete(e.keys, i, i+1)
		}
	}
	for _, it := range m.Items {
		if _, ok := e.json[it.Key]; !ok {
			i, _ := slices.BinarySearch(e.keys, it.Key)
			e.keys = slices.Insert(e.keys, i, it.Key)
		}
		e.json[it.Key], _ = json.Marshal(it)
	}
	return e
}

// digest is bridge.Slice.Digest of the slice.
func (e *encoded) digest() string {
	h := sha256.New()
	for _, k := range e.keys {
		h.Write(e.json[k])
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// saved is the slice file's content: savedSlice as json.Marshal writes
// it, from the cached encodings.
func (e *encoded) saved(revision int64) []byte {
	n := 32
	for _, v := range e.json {
		n += len(v) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, `{"revision":`...)
	b = strconv.AppendInt(b, revision, 10)
	b = append(b, `,"items":[`...)
	for i, k := range e.keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, e.json[k]...)
	}
	return append(b, "]}"...)
}
