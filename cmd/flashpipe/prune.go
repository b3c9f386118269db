package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/flashpipe/flashpipe/internal/store"
)

// PruneCmd deletes old complete batches from the database (docs/capacity.md).
type PruneCmd struct {
	OlderThan age  `required:"" help:"Delete the complete batches submitted and last completed longer ago than this (e.g. 90d, 2160h; at least 1h). Running batches are never deleted."`
	JSON      bool `help:"Print what was deleted as JSON."`
	localStore
}

// minPruneAge guards against a typo deleting yesterday's work.
const minPruneAge = time.Hour

// Run prunes the store.
func (p *PruneCmd) Run(ctx context.Context, log *slog.Logger) error {
	if time.Duration(p.OlderThan) < minPruneAge {
		return fmt.Errorf("--older-than must be at least %s, got %s", minPruneAge, time.Duration(p.OlderThan))
	}
	st, err := p.open(ctx, log)
	if err != nil {
		return err
	}
	defer st.Close()
	pruner, ok := st.(store.Pruner)
	if !ok {
		return fmt.Errorf("this database cannot be pruned (%T)", st)
	}
	before := time.Now().Add(-time.Duration(p.OlderThan)).UTC()
	n, err := pruner.Prune(ctx, before, 0)
	if err != nil {
		return fmt.Errorf("prune (deleted %d batches, %d items before the error): %w", n.Batches, n.Items, err)
	}
	if p.JSON {
		return json.NewEncoder(os.Stdout).Encode(struct {
			Before time.Time `json:"before"`
			store.Pruned
		}{before, n})
	}
	fmt.Printf("deleted %d complete batches (%d items) submitted and completed before %s\n", n.Batches, n.Items, before.Format(time.RFC3339))
	return nil
}

// age is a duration that also takes whole days ("90d").
type age time.Duration

// UnmarshalText parses "<n>d" or a Go duration ("2160h").
func (a *age) UnmarshalText(b []byte) error {
	s := string(b)
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 {
			return fmt.Errorf("%q is not a number of days", s)
		}
		*a = age(time.Duration(n) * 24 * time.Hour)
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is neither a number of days (90d) nor a duration (2160h)", s)
	}
	*a = age(d)
	return nil
}
