// Package demoapp is a small web application to publish through a tunnel
// when trying kakuremichi out and in end-to-end tests: a hello page, the
// request's headers, an upload checksum, a download of any size, server-sent
// events and a WebSocket echo. It imports the standard library and the
// WebSocket library only.
package demoapp

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/coder/websocket"
)

// MaxDownload caps /bytes so a typo cannot stream forever.
const MaxDownload = 16 << 30

var page = template.Must(template.New("hello").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Name}} via kakuremichi</title>
<style>body{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;color:#1d1d1f}
code{background:#f2f2f2;padding:.1rem .3rem;border-radius:4px}</style></head>
<body><h1>Hello from {{.Name}}</h1>
<p>This page was served by the demo app on <code>{{.Host}}</code> and reached you through a kakuremichi tunnel.</p>
<ul><li>Host: <code>{{.ReqHost}}</code></li><li>X-Forwarded-For: <code>{{.XFF}}</code></li><li>X-Forwarded-Proto: <code>{{.XFP}}</code></li></ul>
</body></html>`))

// Handler returns the demo app. name appears on the hello page.
func Handler(name string) http.Handler {
	host, _ := os.Hostname()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		page.Execute(w, map[string]string{"Name": name, "Host": host, "ReqHost": r.Host,
			"XFF": r.Header.Get("X-Forwarded-For"), "XFP": r.Header.Get("X-Forwarded-Proto")})
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("/headers", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		out := map[string]any{"host": r.Host, "method": r.Method, "headers": r.Header, "remote": r.RemoteAddr, "app": name}
		json.NewEncoder(w).Encode(out)
	})
	mux.HandleFunc("POST /upload", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d %s\n", n, hex.EncodeToString(h.Sum(nil)))
	})
	mux.HandleFunc("GET /bytes", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		if err != nil || n < 0 || n > MaxDownload {
			http.Error(w, "n must be a byte count up to 16 GiB", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		io.Copy(w, io.LimitReader(&Pattern{}, n))
	})
	mux.HandleFunc("GET /sse", func(w http.ResponseWriter, r *http.Request) {
		count, _ := strconv.Atoi(r.URL.Query().Get("n"))
		if count <= 0 || count > 1000 {
			count = 5
		}
		interval, _ := time.ParseDuration(r.URL.Query().Get("interval"))
		if interval <= 0 || interval > time.Minute {
			interval = 200 * time.Millisecond
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		rc := http.NewResponseController(w)
		for i := 0; i < count; i++ {
			fmt.Fprintf(w, "id: %d\ndata: event %d at %s\n\n", i, i, time.Now().UTC().Format(time.RFC3339Nano))
			if err := rc.Flush(); err != nil {
				return
			}
			select {
			case <-r.Context().Done():
				return
			case <-time.After(interval):
			}
		}
	})
	mux.HandleFunc("GET /ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
		if err != nil {
			return
		}
		defer c.CloseNow()
		c.SetReadLimit(1 << 20)
		for {
			typ, data, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, data); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("GET /slow", func(w http.ResponseWriter, r *http.Request) {
		d, _ := time.ParseDuration(r.URL.Query().Get("d"))
		if d <= 0 || d > time.Minute {
			d = time.Second
		}
		select {
		case <-time.After(d):
			io.WriteString(w, "done\n")
		case <-r.Context().Done():
		}
	})
	return mux
}

// Pattern is an endless deterministic byte stream (0, 1, ..., 250, 0, ...):
// a download's checksum can be computed without storing it, and a shifted
// or dropped byte shows.
type Pattern struct{ off int64 }

// Read fills p with the pattern.
func (p *Pattern) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = byte((p.off + int64(i)) % 251)
	}
	p.off += int64(len(b))
	return len(b), nil
}
