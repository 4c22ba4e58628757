package certs

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/mholt/acmez/v3/acme"
	"github.com/miekg/dns"
)

// DNSProvider sets and removes the TXT records of DNS-01 challenges in a
// zone Control may change. Names are fully qualified, with the final dot
// ("_acme-challenge.example.com.").
type DNSProvider interface {
	// Present adds value to the TXT records of fqdn (other values stay:
	// a name and its wildcard share one record name).
	Present(ctx context.Context, fqdn, value string) error
	// CleanUp removes value from the TXT records of fqdn.
	CleanUp(ctx context.Context, fqdn, value string) error
	// Wait returns once the record is visible where the CA will look,
	// or an error once ctx is done or the provider gives up.
	Wait(ctx context.Context, fqdn, value string) error
}

// ErrDNSProvider marks an error of the DNS provider (a refused update, a
// record that never became visible), as opposed to one of the CA.
var ErrDNSProvider = errors.New("dns provider")

// dnsSolver answers DNS-01 challenges through a DNSProvider.
type dnsSolver struct{ p DNSProvider }

func providerErr(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrDNSProvider, err)
}

func dnsRecord(chal acme.Challenge) (string, string) {
	return dns.Fqdn(chal.DNS01TXTRecordName()), chal.DNS01KeyAuthorization()
}

// Present adds the challenge's TXT record.
func (s dnsSolver) Present(ctx context.Context, chal acme.Challenge) error {
	name, value := dnsRecord(chal)
	return providerErr(s.p.Present(ctx, name, value))
}

// Wait waits until the record has propagated.
func (s dnsSolver) Wait(ctx context.Context, chal acme.Challenge) error {
	name, value := dnsRecord(chal)
	return providerErr(s.p.Wait(ctx, name, value))
}

// CleanUp removes the record.
func (s dnsSolver) CleanUp(ctx context.Context, chal acme.Challenge) error {
	name, value := dnsRecord(chal)
	return providerErr(s.p.CleanUp(ctx, name, value))
}

// RFC2136Config configures an RFC2136 provider.
type RFC2136Config struct {
	// Server is the primary name server's host:port that takes dynamic
	// updates. Required.
	Server string
	// Zone is the zone the records go in; "" asks Server for the SOA
	// of each name.
	Zone string
	// TSIGKey names the TSIG key the updates are signed with; "" sends
	// them unsigned (only for a server that trusts the address).
	TSIGKey string
	// TSIGSecret is the key's secret, base64 as in BIND's key files.
	TSIGSecret string
	// TSIGAlgorithm is hmac-sha256 (also when ""), hmac-sha512,
	// hmac-sha384, hmac-sha224 or hmac-sha1.
	TSIGAlgorithm string
	// TTL of the records; zero means 60 s.
	TTL time.Duration
	// PropagationTimeout bounds Wait; zero means two minutes.
	PropagationTimeout time.Duration
}

// RFC2136 is a DNSProvider that changes records with DNS UPDATE (RFC
// 2136) signed with TSIG (RFC 8945): BIND, Knot, PowerDNS and most
// authoritative servers take it.
type RFC2136 struct {
	cfg RFC2136Config
	alg string
}

// TSIG algorithms by the names users write.
var tsigAlgorithms = map[string]string{
	"hmac-sha1": dns.HmacSHA1, "hmac-sha224": dns.HmacSHA224, "hmac-sha256": dns.HmacSHA256,
	"hmac-sha384": dns.HmacSHA384, "hmac-sha512": dns.HmacSHA512,
}

// NewRFC2136 checks cfg and returns the provider; nothing is contacted.
// Errors name the Control flag of the field.
func NewRFC2136(cfg RFC2136Config) (*RFC2136, error) {
	if _, _, err := net.SplitHostPort(cfg.Server); err != nil {
		return nil, fmt.Errorf("--acme-dns-server %q: want host:port of the name server that takes updates (e.g. ns1.example.com:53)", cfg.Server)
	}
	alg := strings.ToLower(strings.TrimSuffix(cfg.TSIGAlgorithm, "."))
	if alg == "" {
		alg = "hmac-sha256"
	}
	p := &RFC2136{cfg: cfg, alg: tsigAlgorithms[alg]}
	if p.alg == "" {
		return nil, fmt.Errorf("--acme-dns-tsig-algorithm %q: use hmac-sha256, hmac-sha512, hmac-sha384, hmac-sha224 or hmac-sha1", cfg.TSIGAlgorithm)
	}
	if (cfg.TSIGKey == "") != (cfg.TSIGSecret == "") {
		return nil, errors.New("--acme-dns-tsig-key and --acme-dns-tsig-secret-file: give both or neither")
	}
	if cfg.TSIGSecret != "" {
		if _, err := base64.StdEncoding.DecodeString(cfg.TSIGSecret); err != nil {
			// The secret itself is never quoted.
			return nil, errors.New("--acme-dns-tsig-secret-file: the secret is not base64 (as in BIND's `secret \"...\";`)")
		}
		p.cfg.TSIGKey = dns.Fqdn(strings.ToLower(cfg.TSIGKey))
	}
	if cfg.Zone != "" {
		p.cfg.Zone = dns.Fqdn(strings.ToLower(cfg.Zone))
	}
	if p.cfg.TTL <= 0 {
		p.cfg.TTL = time.Minute
	}
	if p.cfg.PropagationTimeout <= 0 {
		p.cfg.PropagationTimeout = 2 * time.Minute
	}
	return p, nil
}

// exchange sends m to the server over TCP, signed when a key is set.
func (p *RFC2136) exchange(ctx context.Context, m *dns.Msg) (*dns.Msg, error) {
	c := &dns.Client{Net: "tcp", Timeout: 10 * time.Second}
	if p.cfg.TSIGKey != "" {
		m.SetTsig(p.cfg.TSIGKey, p.alg, 300, time.Now().Unix())
		c.TsigSecret = map[string]string{p.cfg.TSIGKey: p.cfg.TSIGSecret}
	}
	resp, _, err := c.ExchangeContext(ctx, m, p.cfg.Server)
	if err != nil {
		return nil, fmt.Errorf("dns server %s: %w", p.cfg.Server, err)
	}
	return resp, nil
}

// zone returns the zone fqdn belongs to: the configured one, else the
// owner of the SOA the server answers for fqdn.
func (p *RFC2136) zone(ctx context.Context, fqdn string) (string, error) {
	if p.cfg.Zone != "" {
		return p.cfg.Zone, nil
	}
	m := new(dns.Msg)
	m.SetQuestion(fqdn, dns.TypeSOA)
	m.RecursionDesired = false
	resp, err := p.exchange(ctx, m)
	if err != nil {
		return "", fmt.Errorf("find the zone of %s: %w", fqdn, err)
	}
	for _, rr := range append(resp.Answer, resp.Ns...) {
		if soa, ok := rr.(*dns.SOA); ok {
			return soa.Hdr.Name, nil
		}
	}
	return "", fmt.Errorf("find the zone of %s: %s answered %s with no SOA (is it authoritative for the name? set --acme-dns-zone)",
		fqdn, p.cfg.Server, dns.RcodeToString[resp.Rcode])
}

func (p *RFC2136) update(ctx context.Context, fqdn, value string, add bool) error {
	zone, err := p.zone(ctx, fqdn)
	if err != nil {
		return err
	}
	rr := &dns.TXT{Hdr: dns.RR_Header{Name: fqdn, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: uint32(p.cfg.TTL / time.Second)},
		Txt: []string{value}}
	m := new(dns.Msg)
	m.SetUpdate(zone)
	verb := "add"
	if add {
		m.Insert([]dns.RR{rr})
	} else {
		verb = "remove"
		m.Remove([]dns.RR{rr})
	}
	resp, err := p.exchange(ctx, m)
	if err != nil {
		return fmt.Errorf("%s the TXT record %s in zone %s: %w", verb, fqdn, zone, err)
	}
	if resp.Rcode != dns.RcodeSuccess {
		return fmt.Errorf("%s the TXT record %s in zone %s: %s refused the update: %s", verb, fqdn, zone, p.cfg.Server, dns.RcodeToString[resp.Rcode])
	}
	return nil
}

// Present implements DNSProvider.
func (p *RFC2136) Present(ctx context.Context, fqdn, value string) error {
	return p.update(ctx, fqdn, value, true)
}

// CleanUp implements DNSProvider.
func (p *RFC2136) CleanUp(ctx context.Context, fqdn, value string) error {
	return p.update(ctx, fqdn, value, false)
}

// Wait implements DNSProvider: it asks the server it updated until the
// value is among the name's TXT records. Secondaries are not checked:
// they receive the change by NOTIFY, and the CA's validation retries.
func (p *RFC2136) Wait(ctx context.Context, fqdn, value string) error {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.PropagationTimeout)
	defer cancel()
	var last error
	for {
		m := new(dns.Msg)
		m.SetQuestion(fqdn, dns.TypeTXT)
		m.RecursionDesired = false
		resp, err := p.exchange(ctx, m)
		if err == nil {
			for _, rr := range resp.Answer {
				if txt, ok := rr.(*dns.TXT); ok && strings.Join(txt.Txt, "") == value {
					return nil
				}
			}
			err = fmt.Errorf("%s answers %s without the challenge value", p.cfg.Server, fqdn)
		}
		last = err
		if !sleep(ctx, 500*time.Millisecond) {
			return fmt.Errorf("wait for the TXT record %s: %w (last: %v)", fqdn, ctx.Err(), last)
		}
	}
}
