package nodecmd

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// RunHealthcheck GETs one URL and exits 0 on a 2xx answer, 1 otherwise.
// It exists for the container image's HEALTHCHECK: the image is built
// FROM scratch, so there is no shell or curl to do it.
func RunHealthcheck(ctx context.Context, args []string, stderr io.Writer) int {
	if len(args) != 1 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(stderr, "Usage: kakuremichi healthcheck URL\n\nGETs URL (http:// only, 5 s limit) and exits 0 on a 2xx answer, 1 otherwise.")
		if len(args) == 1 {
			return 0
		}
		return 2
	}
	u, err := url.Parse(args[0])
	if err != nil || u.Scheme != "http" || u.Host == "" {
		fmt.Fprintf(stderr, "error: %q is not an http:// URL\n", args[0])
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		fmt.Fprintf(stderr, "error: healthcheck: %v\n", err)
		return 2
	}
	// No proxy from the environment: a health check asks this container.
	client := &http.Client{Transport: &http.Transport{}}
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "unhealthy: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		fmt.Fprintf(stderr, "unhealthy: %s answered %s\n", u.Redacted(), resp.Status)
		return 1
	}
	return 0
}
