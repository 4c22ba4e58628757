package wgnet

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strings"

	"golang.zx2c4.com/wireguard/device"
)

// DeviceLogger adapts l to wireguard-go's logger. wireguard-go's verbose
// messages go to l at debug level, without the per-goroutine and
// per-keepalive chatter that would drown everything else; its error messages
// go at warn level, except the ones that are routine for a node whose peers
// come and go (a gateway's agent that has not dialled in yet has no
// endpoint), which stay at debug. Every message is redacted first: anything
// shaped like a key, in hex or base64, becomes "[redacted]", because
// wireguard-go echoes configuration lines in some errors and those lines can
// hold the private key. A nil l discards everything.
func DeviceLogger(l *slog.Logger) *device.Logger {
	if l == nil {
		return &device.Logger{Verbosef: device.DiscardLogf, Errorf: device.DiscardLogf}
	}
	return &device.Logger{
		Verbosef: func(format string, args ...any) {
			if isNoise(format) {
				return
			}
			logRedacted(l, slog.LevelDebug, format, args)
		},
		Errorf: func(format string, args ...any) {
			level := slog.LevelWarn
			msg := fmt.Sprintf(format, args...)
			if isRoutineError(msg) {
				level = slog.LevelDebug
			}
			if !l.Enabled(context.Background(), level) {
				return
			}
			l.Log(context.Background(), level, "wireguard: "+redact(msg))
		},
	}
}

func logRedacted(l *slog.Logger, level slog.Level, format string, args []any) {
	if !l.Enabled(context.Background(), level) {
		return
	}
	l.Log(context.Background(), level, "wireguard: "+redact(fmt.Sprintf(format, args...)))
}

// noisyFormats are wireguard-go verbose messages that repeat for every
// goroutine, every keepalive or every configuration line; SetPeers logs its
// own summary of what it changed instead of the UAPI lines.
var noisyFormats = []string{
	"Routine:",
	"Sending keepalive packet",
	"Receiving keepalive packet",
	"UAPI:",
}

func isNoise(format string) bool {
	for _, n := range noisyFormats {
		if strings.Contains(format, n) {
			return true
		}
	}
	return false
}

// routineErrors are wireguard-go errors that describe a normal state, not a
// fault: a peer with no endpoint yet (an agent behind NAT that has not
// handshaken with this gateway) cannot be sent to.
var routineErrors = []string{
	"no known endpoint for peer",
}

func isRoutineError(msg string) bool {
	for _, r := range routineErrors {
		if strings.Contains(msg, r) {
			return true
		}
	}
	return false
}

// keyPattern matches a 32-byte key in hex (the UAPI form) or in padded
// base64 (the wg tool's form). Base64 public keys are redacted too: the
// pattern cannot tell them from private ones.
var keyPattern = regexp.MustCompile(`[0-9a-fA-F]{64}|[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=`)

// redact replaces everything in s that looks like a key.
func redact(s string) string { return keyPattern.ReplaceAllLiteralString(s, redacted) }

// redactedError hides key-shaped text in an error from wireguard-go while
// keeping it matchable with errors.Is and errors.As.
type redactedError struct{ err error }

func (e redactedError) Error() string { return redact(e.err.Error()) }
func (e redactedError) Unwrap() error { return e.err }
