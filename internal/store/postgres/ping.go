package postgres

import (
	"context"
	"fmt"
)

// Ping checks that the database answers (a connection of the pool round-trips), for
// readiness checks. The error never contains the connection string's password.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("postgres: ping: %w", classify(redact(err, s.pool.Config().ConnString())))
	}
	return nil
}
