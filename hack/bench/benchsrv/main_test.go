package main

import (
	"io"
	"net"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestAppBytes(t *testing.T) {
	srv := httptest.NewServer(appHandler())
	defer srv.Close()
	for _, tc := range []struct {
		n    string
		code int
		size int64
	}{
		{"0", 200, 0},
		{"1", 200, 1},
		{"1028096", 200, 251 * 4096}, // exactly one buffer
		{"3000001", 200, 3000001},    // several buffers and a part
		{"-1", 400, 0}, {"x", 400, 0}, {"", 400, 0},
		{"68719476737", 400, 0}, // over 64 GiB
	} {
		resp, err := srv.Client().Get(srv.URL + "/bytes?n=" + tc.n)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != tc.code {
			t.Fatalf("n=%q: got status %d, want %d", tc.n, resp.StatusCode, tc.code)
		}
		if tc.code != 200 {
			if !strings.Contains(string(body), "n: got") {
				t.Errorf("n=%q: got %q, want an error naming n and its value", tc.n, body)
			}
			continue
		}
		if int64(len(body)) != tc.size {
			t.Fatalf("n=%q: got %d bytes, want %d", tc.n, len(body), tc.size)
		}
		for i, c := range body {
			if c != byte(i%251) {
				t.Fatalf("n=%q: byte %d: got %d, want %d", tc.n, i, c, i%251)
			}
		}
	}
}

func TestProxyTargetMustBeHTTP(t *testing.T) {
	for _, target := range []string{"", "https://x", "127.0.0.1:80", "http://"} {
		err := serveProxy("127.0.0.1:0", target)
		if err == nil || !strings.Contains(err.Error(), "-target") {
			t.Errorf("target %q: got %v, want an error naming -target", target, err)
		}
	}
}

func TestAppUploadCounts(t *testing.T) {
	srv := httptest.NewServer(appHandler())
	defer srv.Close()
	const n = 3 << 20
	resp, err := srv.Client().Post(srv.URL+"/upload", "application/octet-stream", io.LimitReader(zeros{}, n))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if got := strings.TrimSpace(string(body)); resp.StatusCode != 200 || got != strconv.Itoa(n) {
		t.Fatalf("got %d %q, want 200 %d", resp.StatusCode, got, n)
	}
}

type zeros struct{}

func (zeros) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}

func TestUDPEchoSendsBack(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- echoUDP(pc) }()
	c, err := net.Dial("udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2000)
	for _, msg := range []string{"ping", strings.Repeat("x", 1400)} {
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		n, err := c.Read(buf)
		if err != nil || string(buf[:n]) != msg {
			t.Fatalf("sent %d bytes: got %d bytes back (%v), want them all", len(msg), n, err)
		}
	}
	pc.Close()
	if err := <-done; err != nil {
		t.Fatalf("echo after close: got %v, want nil", err)
	}
}
