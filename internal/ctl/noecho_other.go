//go:build !linux

package ctl

import (
	"errors"
	"os"
)

// noEcho is not implemented off Linux: the password is read as typed.
func noEcho(*os.File) (func(), error) {
	return nil, errors.New("echo control is implemented on Linux only")
}
