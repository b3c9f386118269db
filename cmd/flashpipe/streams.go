package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/flashpipe/flashpipe/app"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/permissions"
)

// StreamsCmd shows and changes the streams and KV buckets: the operator's command
// (services only create what is missing; clients change nothing).
type StreamsCmd struct {
	Show        StreamsShowCmd        `cmd:"" default:"withargs" help:"Show what differs between the streams and buckets on the server and this configuration (changes nothing)."`
	Apply       StreamsApplyCmd       `cmd:"" help:"Create the missing streams and buckets and change the differing settings, after showing each change (as the NATS admin: docs/security.md)."`
	Permissions StreamsPermissionsCmd `cmd:"" help:"Print the least-privilege NATS permissions of every role for --prefix, as nats-server configuration (connects to nothing)."`
}

// resourceFlags are the settings of the services' own buckets, for the plan.
type resourceFlags struct {
	NATSFlags
	SequencerLeaseTTL time.Duration `help:"Lease TTL of the sequencers (their --sequencer-lease-ttl)." default:"${sequencer_lease_ttl}" env:"FLASHPIPE_SEQUENCER_LEASE_TTL"`
}

func (f resourceFlags) plan(ctx context.Context, name string, log *slog.Logger) (func(), func([]contract.Change) error, []contract.Change, error) {
	nc, js, c, err := f.connect(ctx, name, log)
	if err != nil {
		return nil, nil, nil, err
	}
	changes, err := app.PlanResources(ctx, js, c, app.ResourceConfig{LeaseTTL: f.SequencerLeaseTTL})
	if err != nil {
		nc.Close()
		return nil, nil, nil, err
	}
	return nc.Close, func(ch []contract.Change) error { return contract.Apply(ctx, js, ch) }, changes, nil
}

// StreamsShowCmd shows the plan.
type StreamsShowCmd struct {
	resourceFlags
	JSON bool `help:"Print the changes as JSON."`
}

// Run shows what apply would change.
func (s *StreamsShowCmd) Run(ctx context.Context, log *slog.Logger) error {
	closeNATS, _, changes, err := s.plan(ctx, "flashpipe-streams", log)
	if err != nil {
		return err
	}
	defer closeNATS()
	if s.JSON {
		if changes == nil {
			changes = []contract.Change{}
		}
		return json.NewEncoder(os.Stdout).Encode(changes)
	}
	printChanges(changes)
	if len(changes) > 0 {
		fmt.Println("apply them with: flashpipe streams apply (same flags)")
	}
	return nil
}

func printChanges(changes []contract.Change) {
	if len(changes) == 0 {
		fmt.Println("the streams and buckets match this configuration: nothing to change")
		return
	}
	for _, ch := range changes {
		fmt.Println(" ", ch)
	}
}

// StreamsApplyCmd applies the plan.
type StreamsApplyCmd struct {
	resourceFlags
	Yes bool `short:"y" help:"Apply without asking (scripts, Kubernetes jobs)."`
}

// Run shows the changes, asks (unless --yes) and applies them.
func (s *StreamsApplyCmd) Run(ctx context.Context, log *slog.Logger) error {
	closeNATS, apply, changes, err := s.plan(ctx, "flashpipe-streams", log)
	if err != nil {
		return err
	}
	defer closeNATS()
	printChanges(changes)
	if len(changes) == 0 {
		return nil
	}
	if !s.Yes {
		if !term.IsTerminal(int(os.Stdin.Fd())) {
			return &exitError{code: 2, err: errors.New("not applied: confirm with --yes (no terminal to ask on)")}
		}
		fmt.Print("apply these changes? [y/N] ")
		answer, _ := bufio.NewReader(os.Stdin).ReadString('\n')
		if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
			return &exitError{code: 1, err: errors.New("not applied")}
		}
	}
	if err := apply(changes); err != nil {
		return err
	}
	fmt.Printf("applied %d changes\n", len(changes))
	return nil
}

// StreamsPermissionsCmd prints the permission configuration.
type StreamsPermissionsCmd struct {
	StreamFlags
}

// Run prints it.
func (s *StreamsPermissionsCmd) Run() error {
	c, err := s.contract()
	if err != nil {
		return err
	}
	fmt.Print(permissions.Render(c))
	return nil
}
