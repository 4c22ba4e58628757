package bridge

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestSliceApplyDiffDigest(t *testing.T) {
	a := Slice{}
	snap := Message{Type: Snapshot, Items: []Item{
		{Key: "self", Self: &Self{Name: "gw1", Address: netip.MustParseAddr("100.64.0.1"), Enabled: true}},
		{Key: "peer/a", Peer: &Peer{Name: "a", PublicKey: "k", Address: netip.MustParseAddr("100.64.0.2")}},
	}}
	s1, err := a.Apply(snap)
	if err != nil {
		t.Fatal(err)
	}
	s2 := Slice{}
	for k, v := range s1 {
		s2[k] = v
	}
	s2["route/x.example.com"] = Item{Key: "route/x.example.com", Route: &Route{Tunnel: "x", Hostname: "x.example.com", Protocol: "http", Agent: "a", Enabled: true}}
	delete(s2, "peer/a")
	up, del := s1.Diff(s2)
	if len(up) != 1 || up[0].Key != "route/x.example.com" || len(del) != 1 || del[0] != "peer/a" {
		t.Fatalf("got upserts %v deleted %v, want the route added and peer/a removed", up, del)
	}
	s3, err := s1.Apply(Message{Type: Delta, Items: up, Deleted: del})
	if err != nil {
		t.Fatal(err)
	}
	if s3.Digest() != s2.Digest() {
		t.Fatalf("got digest %s after applying the delta, want %s", s3.Digest(), s2.Digest())
	}
	if s1.Digest() == s2.Digest() {
		t.Fatal("got equal digests for different slices")
	}
	if _, ok := s1["route/x.example.com"]; ok {
		t.Fatal("Apply modified its receiver")
	}
	if _, err := s1.Apply(Message{Type: Heartbeat}); err == nil {
		t.Fatal("got no error applying a heartbeat")
	}
}

func TestPreambleRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	if err := WritePreamble(&buf, "web"); err != nil {
		t.Fatal(err)
	}
	buf.WriteString("GET / HTTP/1.1\r\n")
	r := bufio.NewReader(&buf)
	got, err := ReadPreamble(r)
	if err != nil || got != "web" {
		t.Fatalf("got %q %v, want web", got, err)
	}
	rest, _ := r.ReadString('\n')
	if rest != "GET / HTTP/1.1\r\n" {
		t.Fatalf("got the stream continuing with %q", rest)
	}
	for _, bad := range []string{"", "HTTP/1.1 200\n", "KKM1 \n", "KKM1 a b\n", strings.Repeat("x", 600) + "\n"} {
		if _, err := ReadPreamble(bufio.NewReader(strings.NewReader(bad))); err == nil {
			t.Errorf("ReadPreamble(%q): got no error", bad)
		}
	}
	if err := WritePreamble(&buf, "a b"); err == nil {
		t.Error("WritePreamble with a space: got no error")
	}
	buf.Reset()
	WriteRefusal(&buf, RefuseTargetUnreachable, "dial tcp 127.0.0.1:8080: connection refused\nx")
	err = ReadAnswer(bufio.NewReader(&buf))
	var re *RefusedError
	if !errors.As(err, &re) || re.Code != RefuseTargetUnreachable || !strings.Contains(re.Message, "connection refused") {
		t.Fatalf("got %v, want a target-unreachable refusal", err)
	}
	buf.Reset()
	WriteAccept(&buf)
	if err := ReadAnswer(bufio.NewReader(&buf)); err != nil {
		t.Fatalf("got %v, want OK", err)
	}
}

func FuzzMessageDecode(f *testing.F) {
	f.Add([]byte(`{"type":"snapshot","revision":5,"items":[{"key":"self","self":{"name":"a","address":"100.64.0.1","enabled":true}}]}`))
	f.Add([]byte(`{"type":"delta","items":[{"key":"peer/x","peer":{"name":"x","publicKey":"k","address":"100.64.0.9"}}],"deleted":["route/a"]}`))
	f.Add([]byte(`{"type":"heartbeat","status":{"revision":3,"peers":[{"name":"g"}]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var m Message
		if err := json.Unmarshal(data, &m); err != nil {
			return
		}
		s, err := Slice{}.Apply(m)
		if err != nil {
			return
		}
		_ = s.Digest()
		up, del := Slice{}.Diff(s)
		if len(del) != 0 || len(up) != len(s) {
			t.Fatalf("diff from empty: got %d upserts %d deletes, want %d and 0", len(up), len(del), len(s))
		}
	})
}

func FuzzPreamble(f *testing.F) {
	f.Add([]byte("KKM1 web\n"))
	f.Add([]byte("ERR target-unreachable refused\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if tun, err := ReadPreamble(bufio.NewReader(bytes.NewReader(data))); err == nil {
			var buf bytes.Buffer
			if err := WritePreamble(&buf, tun); err == nil {
				again, err := ReadPreamble(bufio.NewReader(&buf))
				if err != nil || again != tun {
					t.Fatalf("round trip of %q: got %q %v", tun, again, err)
				}
			}
		}
		_ = ReadAnswer(bufio.NewReader(bytes.NewReader(data)))
	})
}
