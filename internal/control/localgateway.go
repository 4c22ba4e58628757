package control

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/kakuremichi/kakuremichi/api/bridge"
	"github.com/kakuremichi/kakuremichi/gateway"
	"github.com/kakuremichi/kakuremichi/gateway/certsource"
	"github.com/kakuremichi/kakuremichi/internal/bridgeserver"
	"github.com/kakuremichi/kakuremichi/internal/buildinfo"
	"github.com/kakuremichi/kakuremichi/internal/nodeclient"
)

// LocalGateway runs a gateway inside Control's process, the common small
// install: Control and a gateway on one public machine, agents at home.
// The gateway is a node like any other: it enrols, holds a credential and
// watches its slice over the bridge, through Control's own listener.
type LocalGateway struct {
	// Name is the Gateway object's name; "" means "local".
	Name string
	// PublicEndpoint is the host:port agents dial for WireGuard. Required.
	PublicEndpoint string
	// WireGuardPort is the UDP port; zero means 51820.
	WireGuardPort int
	// HTTPListen and HTTPSListen are the gateway's web listeners; empty
	// means :80 and :443.
	HTTPListen, HTTPSListen string
	// TCPListenHost binds tcp tunnels' ports; empty means every address.
	TCPListenHost string
	// CertFile and KeyFile are a default certificate, as for a gateway.
	CertFile, KeyFile string
}

// runLocalGateway enrols the in-process gateway and runs it until ctx is
// done. Its state (WireGuard key, credential, last slice) is kept in
// <data-dir>/gateway, like any gateway's state directory.
func runLocalGateway(ctx context.Context, cfg Config, br *bridgeserver.Server, controlURL string, log *slog.Logger) error {
	lg := cfg.Gateway
	if lg.Name == "" {
		lg.Name = "local"
	}
	if lg.WireGuardPort == 0 {
		lg.WireGuardPort = 51820
	}
	if lg.HTTPListen == "" {
		lg.HTTPListen = ":80"
	}
	if lg.HTTPSListen == "" {
		lg.HTTPSListen = ":443"
	}
	state := filepath.Join(cfg.DataDir, "gateway")
	if err := os.MkdirAll(state, 0o700); err != nil {
		return fmt.Errorf("local gateway: %w", err)
	}
	pk, err := nodeclient.LoadOrCreateKey(state)
	if err != nil {
		return fmt.Errorf("local gateway: %w", err)
	}
	cred, err := br.EnrolLocal(ctx, bridge.RegisterRequest{Kind: "Gateway", Name: lg.Name,
		PublicKey: pk.PublicKey().String(), PublicEndpoint: lg.PublicEndpoint, Version: buildinfo.Version()})
	if err != nil {
		return err
	}
	if err := nodeclient.SaveCredential(state, cred); err != nil {
		return fmt.Errorf("local gateway: %w", err)
	}
	certs := certsource.New(certsource.Config{Logger: log.With("component", "gateway-certificates"), HTTPSPort: certsource.ListenPort(lg.HTTPSListen)})
	g, err := gateway.New(gateway.Config{PrivateKey: pk, WireGuardPort: lg.WireGuardPort, HTTPListen: lg.HTTPListen,
		HTTPSListen: lg.HTTPSListen, TCPListenHost: lg.TCPListenHost, CertFile: lg.CertFile, KeyFile: lg.KeyFile,
		ShutdownGrace: cfg.ShutdownGrace, Logger: log.With("component", "gateway"), GetCertificate: certs.GetCertificate, WrapHTTP: certs.WrapHTTP})
	if err != nil {
		return fmt.Errorf("local gateway: %w", err)
	}
	client, err := nodeclient.New(nodeclient.Config{ControlURL: controlURL, Kind: "Gateway", Name: lg.Name,
		PublicEndpoint: lg.PublicEndpoint, PublicKey: pk.PublicKey(), StateDir: state, Version: buildinfo.Version(),
		// The connection goes to this very process over loopback.
		InsecureSkipVerify: true,
		Apply:              certsource.ApplyBoth(certs, g.Apply), Status: g.Status, Logger: log.With("component", "gateway-bridge")})
	if err != nil {
		return fmt.Errorf("local gateway: %w", err)
	}
	errc := make(chan error, 1)
	go func() { errc <- client.Run(ctx) }()
	err = g.Run(ctx)
	if cerr := <-errc; err == nil {
		err = cerr
	}
	return err
}
