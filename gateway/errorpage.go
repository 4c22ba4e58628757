package gateway

import (
	"bytes"
	"encoding/json"
	"html/template"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/kakuremichi/kakuremichi/api"
)

// ErrorHeader is the response header that carries the reason of every
// error the gateway itself answers, so scripts and tests can tell "no such
// tunnel" from an application's own 404.
const ErrorHeader = "X-Kakuremichi-Error"

// Reasons the gateway answers with, in ErrorHeader and in the "reason"
// field of JSON error bodies. Where package api has a word for the same
// thing, it is the same word.
const (
	// ReasonNoSuchTunnel (404): no route has the request's Host.
	ReasonNoSuchTunnel = "NoSuchTunnel"
	// ReasonTunnelDisabled (503): the tunnel is disabled, as the gateway's
	// route or the agent says.
	ReasonTunnelDisabled = api.ReasonDisabled
	// ReasonAgentOffline (502): the agent has no overlay address, or could
	// not be reached through WireGuard in time.
	ReasonAgentOffline = api.ReasonAgentOffline
	// ReasonTargetUnreachable (502): the agent answered, but the service
	// behind the tunnel refused the connection.
	ReasonTargetUnreachable = api.ReasonTargetUnreachable
	// ReasonAgentUnknownTunnel (502): the agent does not know the tunnel
	// yet; its configuration lags the gateway's.
	ReasonAgentUnknownTunnel = "AgentUnknownTunnel"
	// ReasonUpstreamError (502): the stream through the tunnel broke
	// before the service answered.
	ReasonUpstreamError = "UpstreamError"
	// ReasonGatewayDisabled (503): this gateway is disabled and serves no
	// tunnel.
	ReasonGatewayDisabled = "GatewayDisabled"
	// ReasonGatewayNotReady (503): the gateway has no WireGuard device yet
	// (it has not received its configuration).
	ReasonGatewayNotReady = "GatewayNotReady"
)

// errorPage is one kind of error the gateway answers with.
type errorPage struct {
	status int
	reason string
	// title is short and lower case; it is the JSON "error".
	title string
	// message explains it to a person; %s is replaced by the hostname.
	message string
}

var (
	pageNoSuchTunnel = errorPage{http.StatusNotFound, ReasonNoSuchTunnel, "no such tunnel",
		"This gateway serves no tunnel for %s. Check the address, or the tunnel's hostname."}
	pageTunnelDisabled = errorPage{http.StatusServiceUnavailable, ReasonTunnelDisabled, "tunnel disabled",
		"The tunnel for %s is disabled by its owner."}
	pageAgentOffline = errorPage{http.StatusBadGateway, ReasonAgentOffline, "agent offline",
		"The agent that serves %s cannot be reached right now. It may be stopped or disconnected; try again in a moment."}
	pageTargetUnreachable = errorPage{http.StatusBadGateway, ReasonTargetUnreachable, "the service behind the tunnel refused the connection",
		"The agent for %s is online, but the service it forwards to did not accept the connection. Is the application running?"}
	pageAgentUnknownTunnel = errorPage{http.StatusBadGateway, ReasonAgentUnknownTunnel, "the agent does not serve this tunnel yet",
		"The agent for %s has not received this tunnel's configuration yet; try again in a moment."}
	pageUpstreamError = errorPage{http.StatusBadGateway, ReasonUpstreamError, "the service behind the tunnel did not answer",
		"The connection to the service behind %s broke before it answered."}
	pageGatewayDisabled = errorPage{http.StatusServiceUnavailable, ReasonGatewayDisabled, "gateway disabled",
		"This gateway is out of service and serves no tunnel, %s included; another gateway may."}
	pageGatewayNotReady = errorPage{http.StatusServiceUnavailable, ReasonGatewayNotReady, "gateway not ready",
		"This gateway has not received its configuration yet, so it cannot reach %s; try again in a moment."}
)

// pageTemplate is the one look every error page shares.
var pageTemplate = template.Must(template.New("error").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Status}} {{.Title}}</title>
<style>
body{margin:0;background:#f5f6f8;color:#1f2328;font:16px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif}
main{max-width:36rem;margin:12vh auto;padding:2rem 2.25rem;background:#fff;border-radius:10px;box-shadow:0 1px 4px rgba(0,0,0,.08)}
h1{margin:.25rem 0 .75rem;font-size:1.4rem}
.meta{margin:0;color:#6a737d;font-size:.875rem}
</style>
</head>
<body>
<main>
<p class="meta">Error {{.Status}} · {{.Reason}}</p>
<h1>{{.Title}}</h1>
<p>{{.Message}}</p>
<p class="meta">{{.Host}} · served by a kakuremichi gateway</p>
</main>
</body>
</html>
`))

// errorBody is the JSON form of an error page.
type errorBody struct {
	Error   string `json:"error"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
	Status  int    `json:"status"`
}

// writeError answers r with page, as JSON when the client prefers it.
func writeError(w http.ResponseWriter, r *http.Request, page errorPage) {
	host := normalizeHost(r.Host)
	if host == "" {
		host = "this address"
	}
	title := page.title
	message := strings.Replace(page.message, "%s", host, 1)

	h := w.Header()
	h.Set(ErrorHeader, page.reason)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	var body []byte
	if prefersJSON(r.Header.Values("Accept")) {
		body, _ = json.Marshal(errorBody{Error: title, Reason: page.reason, Message: message, Status: page.status})
		body = append(body, '\n')
		h.Set("Content-Type", "application/json")
	} else {
		var buf bytes.Buffer
		// The template and its data are fixed, so executing it cannot fail.
		_ = pageTemplate.Execute(&buf, struct {
			Status                       int
			Title, Reason, Message, Host string
		}{page.status, strings.ToUpper(title[:1]) + title[1:], page.reason, message, host})
		body = buf.Bytes()
		h.Set("Content-Type", "text/html; charset=utf-8")
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(page.status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// prefersJSON reports whether an Accept header ranks application/json
// above text/html. Without an Accept header, or with */* alone, a person's
// browser is assumed: HTML.
func prefersJSON(accept []string) bool {
	jsonQ, htmlQ := -1.0, -1.0
	for _, line := range accept {
		for _, part := range strings.Split(line, ",") {
			mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil {
				continue
			}
			q := 1.0
			if s, ok := params["q"]; ok {
				if v, err := strconv.ParseFloat(s, 64); err == nil && v >= 0 && v <= 1 {
					q = v
				}
			}
			switch {
			case mt == "application/json" || strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"):
				jsonQ = max(jsonQ, q)
			case mt == "text/html":
				htmlQ = max(htmlQ, q)
			case mt == "*/*" || mt == "text/*":
				htmlQ = max(htmlQ, min(q, 0.01)) // a wildcard never beats an explicit JSON
			}
		}
	}
	return jsonQ > 0 && jsonQ > htmlQ
}
