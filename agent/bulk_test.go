package agent

import (
	"bytes"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api/bridge"
	"github.com/kakuremichi/kakuremichi/internal/leakcheck"
)

// patternReader yields n pseudo-random bytes, the same for the same seed.
func patternReader(seed byte, n int64) io.Reader {
	var s [32]byte
	s[0] = seed
	return io.LimitReader(rand.NewChaCha8(s), n)
}

func patternDigest(seed byte, n int64) []byte {
	h := sha256.New()
	io.Copy(h, patternReader(seed, n))
	return h.Sum(nil)
}

// TestBulkTransfer: 64 MiB (8 MiB under the race detector) cross the
// agent's forwarding intact, each way at the same time: towards the app
// (an upload, with the gateway half-closing at the end) and from it (a
// download ending with the app's close).
func TestBulkTransfer(t *testing.T) {
	if testing.Short() {
		t.Skip("64 MiB transfers skipped in -short")
	}
	leakcheck.Goroutines(t)
	size := int64(64 << 20)
	if raceEnabled {
		size = 8 << 20
	}
	// sink hashes everything until EOF and answers with the digest.
	sink := serveTCP(t, func(c net.Conn) {
		h := sha256.New()
		if _, err := io.Copy(h, c); err == nil {
			c.Write(h.Sum(nil))
		}
	})
	// source sends the pattern to whoever connects with a byte, so that
	// probes (which send nothing) get nothing.
	source := serveTCP(t, func(c net.Conn) {
		if _, err := c.Read(make([]byte, 1)); err != nil {
			return
		}
		io.Copy(c, patternReader(2, size))
	})
	f := startAgent(t, Config{},
		bridge.Forward{Tunnel: "sink", Target: "tcp://" + sink, Enabled: true},
		bridge.Forward{Tunnel: "source", Target: "tcp://" + source, Enabled: true},
	)

	t.Run("to the app", func(t *testing.T) {
		t.Parallel()
		s := f.open(t, "sink")
		s.SetDeadline(time.Now().Add(45 * time.Second))
		start := time.Now()
		if _, err := io.Copy(s, patternReader(1, size)); err != nil {
			t.Fatalf("sending: %v", err)
		}
		if err := s.Conn.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
			t.Fatalf("CloseWrite: %v", err)
		}
		got, err := io.ReadAll(s)
		if err != nil {
			t.Fatalf("reading the digest: %v", err)
		}
		if want := patternDigest(1, size); !bytes.Equal(got, want) {
			t.Fatalf("digest at the app: got %x, want %x", got, want)
		}
		t.Logf("%d MiB to the app in %v", size>>20, time.Since(start))
	})

	t.Run("from the app", func(t *testing.T) {
		t.Parallel()
		s := f.open(t, "source")
		s.SetDeadline(time.Now().Add(45 * time.Second))
		start := time.Now()
		s.Write([]byte{1})
		h := sha256.New()
		n, err := io.Copy(h, s)
		if err != nil {
			t.Fatalf("receiving: %v", err)
		}
		if n != size {
			t.Fatalf("received: got %d bytes, want %d", n, size)
		}
		if got, want := h.Sum(nil), patternDigest(2, size); !bytes.Equal(got, want) {
			t.Fatalf("digest at the gateway: got %x, want %x", got, want)
		}
		t.Logf("%d MiB from the app in %v", size>>20, time.Since(start))
	})
}
