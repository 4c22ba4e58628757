package main

import (
	"context"
	"flag"
	"io"
	"net"
	"time"

	"github.com/kakuremichi/kakuremichi/internal/apiserver"
	"github.com/kakuremichi/kakuremichi/internal/demoapp"
	"github.com/kakuremichi/kakuremichi/internal/flagenv"
)

// runDemo serves the demo app, something to publish on a first try.
func runDemo(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("kakuremichi demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var listen, name string
	var lf logFlags
	fs.StringVar(&listen, "listen", "127.0.0.1:3000", "address to serve the demo app on")
	fs.StringVar(&name, "name", "demo", "name shown on the hello page")
	lf.Register(fs)
	fs.Usage = flagenv.Usage(fs, envPrefix, "Usage: kakuremichi demo [flags]\n\nServes a small web app (hello page, /headers, /upload, /bytes?n=, /sse, /ws) to publish through a tunnel.")
	log, code := parseCommand(fs, args, &lf, stderr)
	if code >= 0 {
		return code
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		log.Error("listen", "err", err)
		return 1
	}
	srv := apiserver.NewHTTPServer(demoapp.Handler(name), nil, log)
	srv.WriteTimeout = 0 // downloads and event streams outlive any fixed deadline
	log.Info("demo app serving", "url", "http://"+ln.Addr().String())
	if err := apiserver.Serve(ctx, srv, ln, 5*time.Second); err != nil {
		log.Error("demo app stopped", "err", err)
		return 1
	}
	return 0
}
