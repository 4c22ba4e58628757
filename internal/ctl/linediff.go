package ctl

import (
	"fmt"
	"io"
	"strings"
)

// opKind is what an edit does to one line.
type opKind byte

const (
	opEqual  opKind = ' '
	opDelete opKind = '-'
	opInsert opKind = '+'
)

// lineOp is one step of an edit script: line a[ai] kept or deleted, or
// line b[bi] inserted.
type lineOp struct {
	kind   opKind
	ai, bi int
}

// maxLCSCells bounds the LCS table; beyond it, the differing middle of
// two texts is shown as replaced wholesale rather than computed.
const maxLCSCells = 4 << 20

// diffLines returns an edit script turning a into b with as few changed
// lines as possible (a longest common subsequence).
func diffLines(a, b []string) []lineOp {
	var ops []lineOp
	// Common prefix and suffix need no table.
	pre := 0
	for pre < len(a) && pre < len(b) && a[pre] == b[pre] {
		ops = append(ops, lineOp{opEqual, pre, pre})
		pre++
	}
	suf := 0
	for suf < len(a)-pre && suf < len(b)-pre && a[len(a)-1-suf] == b[len(b)-1-suf] {
		suf++
	}
	ma, mb := a[pre:len(a)-suf], b[pre:len(b)-suf]
	n, m := len(ma), len(mb)
	if n*m > maxLCSCells {
		for i := range ma {
			ops = append(ops, lineOp{opDelete, pre + i, -1})
		}
		for j := range mb {
			ops = append(ops, lineOp{opInsert, -1, pre + j})
		}
	} else {
		// lcs[i][j] is the LCS length of ma[i:] and mb[j:].
		lcs := make([][]int32, n+1)
		for i := range lcs {
			lcs[i] = make([]int32, m+1)
		}
		for i := n - 1; i >= 0; i-- {
			for j := m - 1; j >= 0; j-- {
				if ma[i] == mb[j] {
					lcs[i][j] = lcs[i+1][j+1] + 1
				} else {
					lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
				}
			}
		}
		i, j := 0, 0
		for i < n || j < m {
			switch {
			case i < n && j < m && ma[i] == mb[j]:
				ops = append(ops, lineOp{opEqual, pre + i, pre + j})
				i++
				j++
			case j < m && (i == n || lcs[i][j+1] > lcs[i+1][j]):
				ops = append(ops, lineOp{opInsert, -1, pre + j})
				j++
			default:
				ops = append(ops, lineOp{opDelete, pre + i, -1})
				i++
			}
		}
	}
	for k := 0; k < suf; k++ {
		ops = append(ops, lineOp{opEqual, len(a) - suf + k, len(b) - suf + k})
	}
	return ops
}

// writeUnifiedDiff writes a unified diff of a and b with context lines
// around each change, and reports whether they differ.
func writeUnifiedDiff(w io.Writer, aName, bName string, a, b []string, context int) (bool, error) {
	ops := diffLines(a, b)
	var changes []int
	for i, op := range ops {
		if op.kind != opEqual {
			changes = append(changes, i)
		}
	}
	if len(changes) == 0 {
		return false, nil
	}
	var out strings.Builder
	fmt.Fprintf(&out, "--- %s\n+++ %s\n", aName, bName)
	for h := 0; h < len(changes); {
		// A hunk spans changes closer than 2*context equal lines apart.
		first, last := changes[h], changes[h]
		h++
		for h < len(changes) && changes[h]-last <= 2*context {
			last = changes[h]
			h++
		}
		start := max(first-context, 0)
		end := min(last+context+1, len(ops))
		aStart, bStart, aLen, bLen := -1, -1, 0, 0
		var body strings.Builder
		for _, op := range ops[start:end] {
			switch op.kind {
			case opEqual:
				body.WriteString(" " + a[op.ai] + "\n")
				aLen++
				bLen++
			case opDelete:
				body.WriteString("-" + a[op.ai] + "\n")
				aLen++
			case opInsert:
				body.WriteString("+" + b[op.bi] + "\n")
				bLen++
			}
			if aStart < 0 && op.ai >= 0 {
				aStart = op.ai
			}
			if bStart < 0 && op.bi >= 0 {
				bStart = op.bi
			}
		}
		fmt.Fprintf(&out, "@@ -%s +%s @@\n", hunkRange(aStart, aLen, ops, start, true), hunkRange(bStart, bLen, ops, start, false))
		out.WriteString(body.String())
	}
	_, err := io.WriteString(w, out.String())
	return true, err
}

// hunkRange formats "start,len" with 1-based lines; an empty range names
// the line before it, as diff(1) does.
func hunkRange(first, n int, ops []lineOp, start int, isA bool) string {
	if n > 0 {
		return fmt.Sprintf("%d,%d", first+1, n)
	}
	// Count the lines of this side before the hunk.
	before := 0
	for _, op := range ops[:start] {
		if (isA && op.ai >= 0) || (!isA && op.bi >= 0) {
			before++
		}
	}
	return fmt.Sprintf("%d,0", before)
}

// splitLines splits text into lines without their newlines.
func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}
