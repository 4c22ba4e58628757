package store

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kakuremichi/kakuremichi/api"
)

// mapErr wraps an error from etcd with what was being done and with the
// api sentinel that says what a caller can do about it.
func (s *Store) mapErr(op string, err error) error {
	if err == nil {
		return nil
	}
	switch {
	case errors.Is(err, rpctypes.ErrNoSpace), errors.Is(err, rpctypes.ErrGRPCNoSpace):
		return fmt.Errorf("%s: %w: %s", op, api.ErrNoSpace, s.noSpaceAdvice())
	case errors.Is(err, rpctypes.ErrCompacted), errors.Is(err, rpctypes.ErrGRPCCompacted):
		return fmt.Errorf("%s: %w: %w", op, api.ErrGone, err)
	case errors.Is(err, rpctypes.ErrRequestTooLarge), errors.Is(err, rpctypes.ErrGRPCRequestTooLarge):
		return fmt.Errorf("%s: %w: %w", op, api.ErrTooLarge, err)
	case unavailable(err):
		return fmt.Errorf("%s: %w: %w", op, api.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// noSpaceAdvice says what a person can do about a full store.
func (s *Store) noSpaceAdvice() string {
	if !s.embedded {
		return "the etcd cluster reached its space quota: compact and defragment it or raise its --quota-backend-bytes, then run 'etcdctl alarm disarm'"
	}
	return fmt.Sprintf("the store reached its quota of %d bytes: compact/defragment or raise --etcd-quota-bytes, then restart Control (it clears the alarm once there is room)", s.quota)
}

// unavailable reports whether err means etcd could not answer in time:
// a deadline, no leader, a lost or refused connection.
func unavailable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, clientv3.ErrNoAvailableEndpoints) {
		return true
	}
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Code() == codes.Unavailable || ee.Code() == codes.DeadlineExceeded
	}
	if st, ok := status.FromError(err); ok {
		return st.Code() == codes.Unavailable || st.Code() == codes.DeadlineExceeded
	}
	return false
}
