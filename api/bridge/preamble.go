package bridge

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
)

// The stream preamble. A gateway opens a TCP connection through WireGuard
// to agentAddress:AgentForwardPort and writes one line naming the tunnel:
//
//	KKM1 <tunnel>\n
//
// The agent looks the tunnel up in its own slice, dials the target, and
// answers with one line before the stream carries the tunnel's bytes:
//
//	OK\n
//	ERR <code> <message>\n
//
// so a gateway can tell "target refused" from "agent offline" and answer
// with the right error page. An agent dials only targets of its own
// enabled tunnels: the preamble names a tunnel, never an address.

// PreambleMagic starts every preamble line.
const PreambleMagic = "KKM1"

// maxPreambleLine bounds a preamble line (a tunnel name is at most 63
// bytes; an error message is short).
const maxPreambleLine = 512

// Refusal codes an agent answers with.
const (
	// RefuseUnknownTunnel: the agent serves no tunnel of that name.
	RefuseUnknownTunnel = "unknown-tunnel"
	// RefuseDisabled: the tunnel is disabled.
	RefuseDisabled = "disabled"
	// RefuseTargetUnreachable: the agent could not connect to the target.
	RefuseTargetUnreachable = "target-unreachable"
	// RefuseBadPreamble: the preamble could not be parsed.
	RefuseBadPreamble = "bad-preamble"
	// RefuseStopping: the agent is shutting down; it finishes the streams
	// it has and opens no new one. A probe answered so knows the agent is
	// still there.
	RefuseStopping = "stopping"
)

// RefusedError is an agent's refusal of a stream.
type RefusedError struct {
	// Code is one of the Refuse* constants.
	Code string
	// Message is the agent's explanation.
	Message string
}

func (e *RefusedError) Error() string { return "agent refused: " + e.Code + ": " + e.Message }

// WritePreamble writes the request line for tunnel.
func WritePreamble(w io.Writer, tunnel string) error {
	if tunnel == "" || strings.ContainsAny(tunnel, " \r\n") || len(tunnel) > 253 {
		return fmt.Errorf("write preamble: invalid tunnel name %q", tunnel)
	}
	_, err := io.WriteString(w, PreambleMagic+" "+tunnel+"\n")
	return err
}

// ReadPreamble reads the request line and returns the tunnel name. r must
// be the buffered reader the stream continues on.
func ReadPreamble(r *bufio.Reader) (string, error) {
	line, err := readLine(r)
	if err != nil {
		return "", fmt.Errorf("read preamble: %w", err)
	}
	magic, tunnel, ok := strings.Cut(line, " ")
	if !ok || magic != PreambleMagic || tunnel == "" || strings.Contains(tunnel, " ") {
		return "", fmt.Errorf("read preamble: malformed line %q", truncate(line))
	}
	return tunnel, nil
}

// WriteAccept answers a preamble with OK.
func WriteAccept(w io.Writer) error {
	_, err := io.WriteString(w, "OK\n")
	return err
}

// WriteRefusal answers a preamble with an error line.
func WriteRefusal(w io.Writer, code, message string) error {
	message = strings.NewReplacer("\r", " ", "\n", " ").Replace(message)
	if len(message) > 400 {
		message = message[:400]
	}
	_, err := io.WriteString(w, "ERR "+code+" "+message+"\n")
	return err
}

// ReadAnswer reads the agent's answer: nil for OK, a *RefusedError for a
// refusal, another error for a broken stream.
func ReadAnswer(r *bufio.Reader) error {
	line, err := readLine(r)
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if line == "OK" {
		return nil
	}
	rest, ok := strings.CutPrefix(line, "ERR ")
	if !ok {
		return fmt.Errorf("read answer: malformed line %q", truncate(line))
	}
	code, msg, _ := strings.Cut(rest, " ")
	return &RefusedError{Code: code, Message: msg}
}

var errLineTooLong = errors.New("line too long")

func readLine(r *bufio.Reader) (string, error) {
	var b strings.Builder
	for {
		c, err := r.ReadByte()
		if err != nil {
			if err == io.EOF && b.Len() > 0 {
				return "", io.ErrUnexpectedEOF
			}
			return "", err
		}
		if c == '\n' {
			return b.String(), nil
		}
		if b.Len() >= maxPreambleLine {
			return "", errLineTooLong
		}
		b.WriteByte(c)
	}
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
