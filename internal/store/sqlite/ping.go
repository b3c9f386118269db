package sqlite

import (
	"context"
	"fmt"
)

// Ping checks that the database file can be read (its schema header), for readiness
// checks.
func (s *Store) Ping(ctx context.Context) error {
	var version int
	if err := s.readers.QueryRowContext(ctx, "PRAGMA schema_version").Scan(&version); err != nil {
		return fmt.Errorf("sqlite: ping: %w", classify(err))
	}
	return nil
}
