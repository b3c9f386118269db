package health

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Names of the checks built by this package.
const (
	CheckNATS     = "nats"
	CheckStreams  = "streams"
	CheckConsumer = "consumer"
	CheckDatabase = "database"
)

// errDisconnected fails the JetStream checks at once while the connection is down,
// instead of letting their requests wait for the timeout.
var errDisconnected = errors.New("not connected to NATS")

// NATS passes while nc is connected and the server answers a round trip.
func NATS(nc *nats.Conn) Check {
	return Check{Name: CheckNATS, Run: func(ctx context.Context) error {
		if !nc.IsConnected() {
			return fmt.Errorf("%w (connection %s)", errDisconnected, nc.Status())
		}
		if err := nc.FlushWithContext(ctx); err != nil {
			return fmt.Errorf("round trip to NATS: %w", err)
		}
		return nil
	}}
}

// Streams passes while every named stream exists (JetStream answers its info).
func Streams(js jetstream.JetStream, names ...string) Check {
	return Check{Name: CheckStreams, Run: func(ctx context.Context) error {
		if !js.Conn().IsConnected() {
			return errDisconnected
		}
		var errs []error
		for _, name := range names {
			if _, err := js.Stream(ctx, name); err != nil {
				errs = append(errs, fmt.Errorf("stream %s: %w", name, err))
			}
		}
		return errors.Join(errs...)
	}}
}

// Consumer passes while the durable consumer exists on stream. A service whose
// consumer was deleted receives nothing until it is created again.
func Consumer(js jetstream.JetStream, stream, durable string) Check {
	return Check{Name: CheckConsumer, Run: func(ctx context.Context) error {
		if !js.Conn().IsConnected() {
			return errDisconnected
		}
		if _, err := js.Consumer(ctx, stream, durable); err != nil {
			return fmt.Errorf("consumer %s on stream %s: %w", durable, stream, err)
		}
		return nil
	}}
}

// Pinger is a database that can say whether it is reachable. The flashpipe.Store
// drivers implement it (internal/store/postgres, internal/store/sqlite).
type Pinger interface {
	Ping(ctx context.Context) error
}

// Database passes while db answers a ping.
func Database(db Pinger) Check {
	return Check{Name: CheckDatabase, Run: func(ctx context.Context) error {
		if err := db.Ping(ctx); err != nil {
			return fmt.Errorf("database: %w", err)
		}
		return nil
	}}
}
