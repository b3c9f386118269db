package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe/app"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/permissions"
)

// NATSSetupCmd creates or updates the streams and KV buckets, as the admin role, so
// the services can run as users without the right to manage them
// (docs/security.md).
type NATSSetupCmd struct {
	NATSFlags
	SequencerLeaseTTL time.Duration `help:"Lease TTL of the sequencers (their --sequencer-lease-ttl)." default:"30s" env:"FLASHPIPE_SEQUENCER_LEASE_TTL"`
	PrintPermissions  bool          `help:"Print the least-privilege permissions of every role for --prefix as nats-server configuration, and connect to nothing."`
}

// Run sets the streams and buckets up, or prints the permissions.
func (s *NATSSetupCmd) Run(ctx context.Context, log *slog.Logger) error {
	c, err := s.contract()
	if err != nil {
		return err
	}
	if s.PrintPermissions {
		fmt.Print(permissions.Render(c))
		return nil
	}
	nc, js, c, err := s.connect(ctx, "flashpipe-nats-setup", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	if err := setUpNATS(ctx, js, c, s.SequencerLeaseTTL, log); err != nil {
		return err
	}
	fmt.Printf("streams %s, %s, %s, %s and their KV buckets are in place\n", c.BatchesStream(), c.ItemsStream(), c.ResultsStream(), c.OrderedStream())
	return nil
}

// setUpNATS creates or updates the streams and the KV buckets the services use (the
// processors' rate limit bucket, kept in memory, is theirs to create).
func setUpNATS(ctx context.Context, js jetstream.JetStream, c *contract.Contract, leaseTTL time.Duration, log *slog.Logger) error {
	changes, err := app.PlanResources(ctx, js, c, app.ResourceConfig{LeaseTTL: leaseTTL})
	if err != nil {
		return err
	}
	for _, ch := range changes {
		log.Info(ch.String())
	}
	return contract.Apply(ctx, js, changes)
}
