//go:build !linux

package wgnet

import (
	"log/slog"

	"golang.zx2c4.com/wireguard/conn"
)

// newBind is wireguard-go's standard bind where this package has no bind
// of its own.
func newBind(*slog.Logger) conn.Bind { return conn.NewDefaultBind() }
