package store

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/client/pkg/v3/fileutil"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
	"go.uber.org/zap/zapcore"

	"github.com/kakuremichi/kakuremichi/api"
)

// Defaults applied by Open to zero Config fields.
const (
	// DefaultPrefix is the key prefix when Config.Prefix is empty.
	DefaultPrefix = "/kakuremichi/"
	// DefaultQuotaBackendBytes is the embedded etcd's quota when
	// Config.QuotaBackendBytes is 0.
	DefaultQuotaBackendBytes int64 = 2 << 30
	// DefaultAutoCompactionRetention is the embedded etcd's history
	// retention when Config.AutoCompactionRetention is empty: five
	// minutes, the interval Kubernetes' API server compacts at. Every
	// status and lease a node writes stays in the history until
	// compacted: 2,000 agents and 200 gateways with full heartbeats write
	// about 1.2 MiB/s, and an hour of that is twice the default quota.
	DefaultAutoCompactionRetention = "5m"
	// raftEntriesKept is how many applied raft entries the embedded etcd
	// keeps in memory beyond the 100 it compacts its log by (its
	// SnapshotCatchUpEntries).
	raftEntriesKept = 10
)

const (
	// startTimeout bounds how long Open waits for the embedded etcd to
	// serve; replaying a large WAL after a crash can take a while.
	startTimeout = 60 * time.Second
	// dialTimeout bounds the client's first connection.
	dialTimeout = 5 * time.Second
	// readyTimeout bounds Ready, and Revision when its context has no
	// deadline, so a health check never hangs on a dead cluster.
	readyTimeout = 5 * time.Second
	// maxUnixSocketPath keeps the socket path under the kernel's limit
	// (108 bytes on Linux, including the terminating NUL).
	maxUnixSocketPath = 100
)

// Config configures Open.
type Config struct {
	// DataDir holds the embedded etcd (in <DataDir>/etcd), its socket and
	// its lock file. Required unless Endpoints is set; created with mode
	// 0700 if missing.
	DataDir string
	// Endpoints are the client URLs of an external etcd cluster
	// ("https://etcd-1:2379"). When set, no embedded etcd is started and
	// DataDir is ignored. Empty: embedded etcd.
	Endpoints []string
	// CAFile verifies an external cluster's server certificates. Empty:
	// the system roots when an endpoint is https, plain TCP otherwise.
	CAFile string
	// CertFile and KeyFile are a client certificate for an external
	// cluster. Both empty: no client certificate.
	CertFile, KeyFile string
	// Username and Password authenticate to an external cluster with
	// etcd's own auth. Empty: no auth.
	Username, Password string
	// Prefix starts every key. Empty: DefaultPrefix. A missing trailing
	// "/" is added.
	Prefix string
	// QuotaBackendBytes is the embedded etcd's space quota; writes fail
	// with api.ErrNoSpace beyond it. 0: DefaultQuotaBackendBytes. An
	// external cluster has its own quota, set on its servers.
	QuotaBackendBytes int64
	// AutoCompactionRetention is how much history the embedded etcd keeps
	// (periodic compaction), e.g. "5m"; a watch from an older revision
	// gets api.ErrGone. Empty: DefaultAutoCompactionRetention.
	AutoCompactionRetention string
	// Logger receives the store's lines and etcd's warnings. Nil:
	// discarded.
	Logger *slog.Logger
}

// Store is typed access to kakuremichi's objects in etcd. Its methods are
// safe for concurrent use.
type Store struct {
	client *clientv3.Client
	log    *slog.Logger
	prefix string
	// quota is the embedded etcd's backend quota in bytes, for messages;
	// 0 for an external cluster, whose quota is not known here.
	quota    int64
	embedded bool
	// pageSize is List's page size; 0 means listPageSize. Tests shrink it.
	pageSize int64

	// etcd and lock are nil for an external cluster.
	etcd *embed.Etcd
	lock *fileutil.LockedFile

	// quiet demotes etcd's log lines once Close has begun.
	quiet atomic.Bool
	// done is closed by Close so that watch goroutines stop even when
	// their caller forgets to cancel.
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// Open starts the embedded etcd in cfg.DataDir and waits until it serves,
// or connects to the external cluster at cfg.Endpoints and checks that it
// answers. ctx bounds the wait. The Store must be closed.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	prefix := cfg.Prefix
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	s := &Store{log: log, prefix: prefix, done: make(chan struct{})}
	if len(cfg.Endpoints) > 0 {
		if err := s.dialExternal(ctx, cfg); err != nil {
			return nil, err
		}
		return s, nil
	}
	if err := s.startEmbedded(ctx, cfg); err != nil {
		return nil, err
	}
	return s, nil
}

// startEmbedded starts etcd inside cfg.DataDir and connects a client to it.
func (s *Store) startEmbedded(ctx context.Context, cfg Config) (err error) {
	if cfg.DataDir == "" {
		return errors.New("open store: a data directory is required when no etcd endpoints are given")
	}
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("open store: create data directory: %w", err)
	}
	// etcd locks its WAL only after it has opened its listeners, and its
	// unix listener removes an existing socket file first: without a lock
	// of our own, a second process on the same directory would unlink the
	// first one's socket before failing.
	lock, err := fileutil.TryLockFile(filepath.Join(dir, "etcd.lock"), os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		if errors.Is(err, fileutil.ErrLocked) {
			return fmt.Errorf("open store: data directory %s is in use by another process", dir)
		}
		return fmt.Errorf("open store: lock data directory: %w", err)
	}
	defer func() {
		if err != nil {
			lock.Close()
		}
	}()

	s.quota = cfg.QuotaBackendBytes
	if s.quota == 0 {
		s.quota = DefaultQuotaBackendBytes
	}
	retention := cfg.AutoCompactionRetention
	if retention == "" {
		retention = DefaultAutoCompactionRetention
	}

	ec := embed.NewConfig()
	ec.Name = "kakuremichi"
	ec.Dir = filepath.Join(dir, "etcd")
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(newZapLogger(s.log.With("component", "etcd"), zapcore.WarnLevel, &s.quiet))
	ec.LogLevel = "warn"
	ec.WarningUnaryRequestDuration = embed.DefaultWarningUnaryRequestDuration
	// A single member never talks to peers, so it listens for none: no
	// port to collide with another Store, nothing for a local user to
	// reach. The advertised peer URL only names the member in its own
	// cluster membership; nothing ever dials it.
	ec.ListenPeerUrls = nil
	self := url.URL{Scheme: "http", Host: "127.0.0.1:0"}
	ec.AdvertisePeerUrls = []url.URL{self}
	ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	ec.InitialClusterToken = "kakuremichi"
	// It listens on a unix socket inside the data directory (mode 0700):
	// private to this user and free of port collisions. A data directory
	// too deep for a socket path falls back to a random loopback port.
	sock := filepath.Join(dir, "etcd.sock")
	listen := url.URL{Scheme: "unix", Path: sock}
	if len(sock) > maxUnixSocketPath {
		listen = url.URL{Scheme: "http", Host: "127.0.0.1:0"}
		s.log.Warn("the data directory's path is too long for a unix socket: etcd listens on a loopback port that other local users can reach; use a shorter --data-dir",
			"dataDir", dir)
	}
	ec.ListenClientUrls = []url.URL{listen}
	ec.AdvertiseClientUrls = []url.URL{self}
	ec.EnableGRPCGateway = false
	ec.AutoCompactionMode = embed.CompactorModePeriodic
	ec.AutoCompactionRetention = retention
	ec.QuotaBackendBytes = s.quota
	// etcd keeps the latest raft entries in memory, whole, for slow
	// followers to catch up from: 5,000 by default. A single member has
	// none, and with nodes' statuses of hundreds of KB (a gateway lists
	// every agent) those entries held gigabytes.
	ec.SnapshotCatchUpEntries = raftEntriesKept

	e, err := embed.StartEtcd(ec)
	if err != nil {
		return fmt.Errorf("open store: start embedded etcd in %s: %w", ec.Dir, err)
	}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		return fmt.Errorf("open store: embedded etcd failed while starting: %w", err)
	case <-timer.C:
		return fmt.Errorf("open store: embedded etcd in %s did not become ready within %s", ec.Dir, startTimeout)
	case <-ctx.Done():
		return fmt.Errorf("open store: waiting for embedded etcd: %w", ctx.Err())
	}

	// Control calls its embedded etcd in process, not through the
	// socket: gRPC's HTTP/2 transport over a unix socket deadlocks for
	// good when many unary calls are in flight at once (grpc-go 1.82.1
	// and later, grpc/grpc-go#9330), and a fleet reconnecting after a
	// restart makes a thousand. The socket serves the one call the
	// in-process client cannot make (defragmenting, see clearSpaceAlarm),
	// and other local tools.
	endpoint := "unix://" + sock
	if listen.Scheme != "unix" {
		endpoint = "http://" + e.Clients[0].Addr().String()
	}
	client := v3client.New(e.Server)
	s.client, s.etcd, s.lock, s.embedded = client, e, lock, true
	if err := s.clearSpaceAlarm(ctx, endpoint); err != nil {
		client.Close()
		return err
	}
	return nil
}

// clearSpaceAlarm lifts a NOSPACE alarm left from an earlier run when the
// store has room again, e.g. after the quota was raised: etcd never lifts
// it by itself, so without this a full store would stay read-only forever.
func (s *Store) clearSpaceAlarm(ctx context.Context, endpoint string) error {
	alarms, err := s.client.AlarmList(ctx)
	if err != nil {
		return s.mapErr("open store: list alarms", err)
	}
	for _, a := range alarms.Alarms {
		if a.Alarm != etcdserverpb.AlarmType_NOSPACE {
			continue
		}
		// The in-process client's maintenance calls lack what a
		// defragmentation needs: this one goes through the socket.
		mc, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: dialTimeout,
			Logger: newZapLogger(s.log.With("component", "etcd-client"), zapcore.WarnLevel, &s.quiet)})
		if err != nil {
			return fmt.Errorf("open store: connect to embedded etcd: %w", err)
		}
		defer mc.Close()
		if _, err := mc.Defragment(ctx, endpoint); err != nil {
			return s.mapErr("open store: defragment", err)
		}
		st, err := mc.Status(ctx, endpoint)
		if err != nil {
			return s.mapErr("open store: read status", err)
		}
		if st.DbSize >= s.quota {
			s.log.Warn("the store is full and refuses writes", "sizeBytes", st.DbSize, "quotaBytes", s.quota,
				"fix", "delete objects or raise --etcd-quota-bytes, then restart")
			return nil
		}
		if _, err := s.client.AlarmDisarm(ctx, (*clientv3.AlarmMember)(a)); err != nil {
			return s.mapErr("open store: disarm space alarm", err)
		}
		s.log.Info("cleared the store's out-of-space alarm", "sizeBytes", st.DbSize, "quotaBytes", s.quota)
	}
	return nil
}

// dialExternal connects to an external etcd cluster and checks that it
// answers a quorum read.
func (s *Store) dialExternal(ctx context.Context, cfg Config) error {
	tlsCfg, err := clientTLS(cfg)
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	client, err := clientv3.New(clientv3.Config{
		Endpoints:   cfg.Endpoints,
		DialTimeout: dialTimeout,
		TLS:         tlsCfg,
		Username:    cfg.Username,
		Password:    cfg.Password,
		// Pings find a connection that died without a FIN (a member
		// that lost power, a dropped NAT mapping), so requests fail over
		// instead of hanging on it.
		DialKeepAliveTime:    30 * time.Second,
		DialKeepAliveTimeout: 10 * time.Second,
		Logger:               newZapLogger(s.log.With("component", "etcd-client"), zapcore.WarnLevel, &s.quiet),
	})
	if err != nil {
		return s.mapErr(fmt.Sprintf("open store: connect to etcd at %s", strings.Join(cfg.Endpoints, ",")), err)
	}
	s.client = client
	if err := s.Ready(ctx); err != nil {
		client.Close()
		return fmt.Errorf("open store: etcd at %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	return nil
}

// clientTLS builds the client's TLS configuration from files, or returns
// nil when the cluster is reached in plain text.
func clientTLS(cfg Config) (*tls.Config, error) {
	secure := false
	for _, ep := range cfg.Endpoints {
		secure = secure || strings.HasPrefix(ep, "https://") || strings.HasPrefix(ep, "unixs://")
	}
	if !secure && cfg.CAFile == "" && cfg.CertFile == "" && cfg.KeyFile == "" {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read etcd CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("read etcd CA file %s: no PEM certificate in it", cfg.CAFile)
		}
		tc.RootCAs = pool
	}
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		return nil, errors.New("an etcd client certificate needs both a certificate file and a key file")
	}
	if cfg.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load etcd client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// Close stops the client and, for an embedded etcd, the server, and
// releases the data directory. Watches end. It is idempotent: later calls
// return the first call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.quiet.Store(true)
		close(s.done)
		var errs []error
		if err := s.client.Close(); err != nil && !errors.Is(err, context.Canceled) {
			errs = append(errs, fmt.Errorf("close etcd client: %w", err))
		}
		if s.etcd != nil {
			s.etcd.Close()
		}
		if s.lock != nil {
			if err := s.lock.Close(); err != nil {
				errs = append(errs, fmt.Errorf("unlock data directory: %w", err))
			}
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// Ready performs a quorum read and returns an error wrapping
// api.ErrUnavailable when etcd cannot answer within ctx or a few seconds,
// whichever ends first. Meant for /readyz.
func (s *Store) Ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	_, err := s.Revision(ctx)
	return err
}

// Client returns the underlying etcd client, for leader election and
// locks. Keys outside the store's prefix are the caller's business; the
// client must not be closed.
func (s *Store) Client() *clientv3.Client { return s.client }

// Revision returns the store's current revision, read with a quorum read.
// Without a deadline in ctx it gives up after a few seconds.
func (s *Store) Revision(ctx context.Context) (int64, error) {
	select {
	case <-s.done:
		return 0, fmt.Errorf("read store revision: %w: the store is closed", api.ErrUnavailable)
	default:
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, readyTimeout)
		defer cancel()
	}
	resp, err := s.client.Get(ctx, s.prefix, clientv3.WithCountOnly())
	if err != nil {
		return 0, s.mapErr("read store revision", err)
	}
	return resp.Header.Revision, nil
}
