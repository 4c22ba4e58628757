package control

import (
	"context"
	"log/slog"

	"github.com/kakuremichi/kakuremichi/store"
)

// components returns Control's long-running loops besides the API, by
// name.
func components(st *store.Store, log *slog.Logger) map[string]func(context.Context) error {
	return map[string]func(context.Context) error{}
}
