package nodeclient

import (
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"unique"
	"unsafe"

	"github.com/kakuremichi/kakuremichi/api/bridge"
)

// encoded keeps the JSON of every item of the slice a node holds, in key
// order, so that a delta costs only its own items: the digest and the
// saved file reuse the encoding of the rest. A gateway of a large fleet
// holds thousands of peers and gets a delta for each one that comes.
//
// The JSON and the keys are interned: an item is the same in every slice
// that holds it (a peer, in every gateway's or agent's), so a process
// holding many slices, as the scale benchmark's simulated fleet does,
// keeps one copy.
type encoded struct {
	keys []handle          // sorted by value
	json map[handle]handle // by key

	// marks[j] is the SHA-256 state after the lines of
	// keys[:j*markEvery]; marks[:valid] are current. The digest of a
	// delta resumes from the last mark before its first change: a new
	// route sorts after a gateway's thousands of peers, and costs only
	// the lines after them.
	marks [][]byte
	valid int
}

// handle is an interned string: one pointer, one copy per process.
type handle = unique.Handle[string]

// byValue orders handles as their strings.
func byValue(a handle, b string) int { return strings.Compare(a.Value(), b) }

// markEvery is how many lines of the digest lie between two marks.
const markEvery = 64

// changedAt notes that the line at index i changed, came or went.
func (e *encoded) changedAt(i int) {
	e.valid = min(e.valid, i/markEvery+1)
}

// encode encodes every item of s.
func encode(s bridge.Slice) *encoded {
	e := &encoded{keys: make([]handle, 0, len(s)), json: make(map[handle]handle, len(s))}
	for k, it := range s {
		h := unique.Make(k)
		e.keys = append(e.keys, h)
		e.json[h] = line(it)
	}
	slices.SortFunc(e.keys, func(a, b handle) int { return byValue(a, b.Value()) })
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
	for _, name := range m.Deleted {
		k := unique.Make(name)
		if _, ok := e.json[k]; !ok {
			continue
		}
		delete(e.json, k)
		if i, found := slices.BinarySearchFunc(e.keys, name, byValue); found {
			e.keys = slices.Delete(e.keys, i, i+1)
			e.changedAt(i)
		}
	}
	for _, it := range m.Items {
		k := unique.Make(it.Key)
		i, found := slices.BinarySearchFunc(e.keys, it.Key, byValue)
		if !found {
			e.keys = slices.Insert(e.keys, i, k)
		}
		data := line(it)
		if !found || data != e.json[k] {
			e.changedAt(i)
		}
		e.json[k] = data
	}
	return e
}

// line is an item's JSON, as bridge.Slice.Digest hashes it.
func line(it bridge.Item) handle {
	data, _ := json.Marshal(it)
	return unique.Make(string(data))
}

// digest is bridge.Slice.Digest of the slice. It hashes from the last
// current mark on, and marks the way.
func (e *encoded) digest() string {
	h := sha256.New()
	start := 0
	if e.valid > 1 {
		start = e.valid - 1
		if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(e.marks[start]); err != nil {
			panic("nodeclient: resume a SHA-256 state: " + err.Error())
		}
	}
	if len(e.marks) == 0 {
		e.marks = append(e.marks, nil) // marks[0]: nothing hashed
	}
	e.marks = e.marks[:min(len(e.marks), start+1)]
	for i := start * markEvery; i < len(e.keys); i++ {
		if i%markEvery == 0 && i > 0 {
			mark, _ := h.(encoding.BinaryMarshaler).MarshalBinary()
			e.marks = append(e.marks[:i/markEvery], mark)
		}
		l := e.json[e.keys[i]].Value()
		// SHA-256 only reads what it is given: the line is not copied.
		h.Write(unsafe.Slice(unsafe.StringData(l), len(l)))
		h.Write([]byte{'\n'})
	}
	e.valid = len(e.marks)
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// saved is the slice file's content: savedSlice as json.Marshal writes
// it, from the cached encodings.
func (e *encoded) saved(revision int64) []byte {
	n := 32
	for _, v := range e.json {
		n += len(v.Value()) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, `{"revision":`...)
	b = strconv.AppendInt(b, revision, 10)
	b = append(b, `,"items":[`...)
	for i, k := range e.keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, e.json[k].Value()...)
	}
	return append(b, "]}"...)
}
