package client

import (
	"context"
	"fmt"
	"net/http"

	"github.com/kakuremichi/kakuremichi/api"
)

// CA returns the root certificate (PEM) of Control's internal CA, which
// signs tunnel certificates in internal mode: what `curl --cacert` and
// browsers are told to trust. It needs no credential.
func (c *Client) CA(ctx context.Context) ([]byte, error) {
	data, _, err := c.do(ctx, request{method: http.MethodGet, path: c.base.Path + api.CAPath})
	if err != nil {
		return nil, fmt.Errorf("get the internal CA: %w", err)
	}
	return data, nil
}
