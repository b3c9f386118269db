package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"sort"

	"github.com/flashpipe/flashpipe/internal/cache"
)

// CacheCmd inspects and clears the answer cache.
type CacheCmd struct {
	Stats CacheStatsCmd `cmd:"" help:"Count the cached answers by stage and model."`
	Clear CacheClearCmd `cmd:"" help:"Remove cached answers: all, or one stage's, or one model's (the next batch pays for them again)."`
}

// openCache connects to NATS and opens the answer cache; close closes the connection.
func (f NATSFlags) openCache(ctx context.Context, log *slog.Logger) (answers *cache.Cache, close func(), err error) {
	nc, js, c, err := f.connect(ctx, "flashpipe-cache", log)
	if err != nil {
		return nil, nil, err
	}
	if answers, err = cache.Open(ctx, js, c, cache.Config{Logger: log}); err != nil {
		nc.Close()
		return nil, nil, err
	}
	return answers, nc.Close, nil
}

// CacheStatsCmd prints cache statistics.
type CacheStatsCmd struct {
	NATSFlags
	JSON bool `help:"Print JSON."`
}

// Run prints the statistics.
func (s *CacheStatsCmd) Run(ctx context.Context, log *slog.Logger) error {
	answers, closeNATS, err := s.openCache(ctx, log)
	if err != nil {
		return err
	}
	defer closeNATS()
	st, err := answers.Stats(ctx)
	if err != nil {
		return err
	}
	if s.JSON {
		return json.NewEncoder(os.Stdout).Encode(st)
	}
	fmt.Printf("cache %s: %d answers, %d bytes\n", st.Bucket, st.Entries, st.Bytes)
	for _, group := range []struct {
		name string
		m    map[string]int
	}{{"stage", st.ByStage}, {"model", st.ByModel}} {
		keys := make([]string, 0, len(group.m))
		for k := range group.m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Printf("  %s %s: %d\n", group.name, k, group.m[k])
		}
	}
	return nil
}

// CacheClearCmd removes cached answers.
type CacheClearCmd struct {
	NATSFlags
	Stage int    `help:"Only this stage's answers (1 or 2; 0: both)." default:"0" enum:"0,1,2"`
	Model string `help:"Only this model's answers."`
	Yes   bool   `help:"Do not ask for confirmation (clearing everything needs it)."`
}

// Run clears the cache.
func (s *CacheClearCmd) Run(ctx context.Context, log *slog.Logger) error {
	if s.Stage == 0 && s.Model == "" && !s.Yes {
		return fmt.Errorf("this clears every cached answer: the next batches pay for all of them again; add --yes to confirm")
	}
	answers, closeNATS, err := s.openCache(ctx, log)
	if err != nil {
		return err
	}
	defer closeNATS()
	n, err := answers.Clear(ctx, s.Stage, s.Model)
	if err != nil {
		return err
	}
	fmt.Printf("removed %d cached answers\n", n)
	return nil
}
