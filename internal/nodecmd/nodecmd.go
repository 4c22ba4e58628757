// Package nodecmd is the command line of the nodes, `kakuremichi agent`
// and `kakuremichi gateway`, and what every subcommand shares (logging
// flags, flags from the environment). It lives apart from the main
// package so that the lean agent binary, kakuremichi-agent, links the
// agent without Control and its embedded etcd.
package nodecmd

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/kakuremichi/kakuremichi/internal/flagenv"
)

// EnvPrefix starts the environment variable of every flag:
// --log-level is also KAKUREMICHI_LOG_LEVEL.
const EnvPrefix = "KAKUREMICHI_"

// LogFlags are the logging flags every subcommand shares.
type LogFlags struct {
	level, format string
	debugListen   string
}

// Register declares --log-level, --log-format and --debug-listen on fs.
func (l *LogFlags) Register(fs *flag.FlagSet) {
	fs.StringVar(&l.level, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&l.format, "log-format", "text", "text or json")
	fs.StringVar(&l.debugListen, "debug-listen", "", "address (such as 127.0.0.1:6060) of an HTTP server of the process's Go profiles at /debug/pprof/; off when empty. Whoever reaches it can read them: keep it on loopback")
}

// Logger builds the logger the flags ask for, writing to w.
func (l *LogFlags) Logger(w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(l.level)); err != nil {
		return nil, fmt.Errorf("--log-level: %q is not one of debug, info, warn, error", l.level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch l.format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format: %q is not text or json", l.format)
	}
}

// ParseCommand parses a subcommand's flags (each also read from its
// environment variable), refuses stray arguments and builds the logger.
// It returns the exit code to stop with, or -1 to go on.
func ParseCommand(fs *flag.FlagSet, args []string, lf *LogFlags, stderr io.Writer) (*slog.Logger, int) {
	if err := flagenv.Parse(fs, EnvPrefix, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, 0
		}
		fmt.Fprintf(stderr, "error: %v\n", err)
		return nil, 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "error: unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return nil, 2
	}
	log, err := lf.Logger(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "error: %v\n", err)
		return nil, 2
	}
	if lf.debugListen != "" {
		ln, err := net.Listen("tcp", lf.debugListen)
		if err != nil {
			fmt.Fprintf(stderr, "error: --debug-listen: %v\n", err)
			return nil, 2
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(ln)
		log.Info("serving Go profiles", "url", "http://"+ln.Addr().String()+"/debug/pprof/")
	}
	return log, -1
}
