package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/flashpipe/flashpipe/app"
)

// CapCmd shows and sets the spend caps.
type CapCmd struct {
	Show CapShowCmd `cmd:"" help:"Show the period cap and, with --batch, a batch's cap: spent, held, and whether it is paused."`
	Set  CapSetCmd  `cmd:"" help:"Set a batch's cap (--batch ID) or the overall cap per period (--period); raising a cap resumes what it paused."`
}

// client connects a cap command to NATS.
func (f NATSFlags) capClient(ctx context.Context, log *slog.Logger) (*app.Client, func(), error) {
	nc, js, c, err := f.connect(ctx, "flashpipe-cap", log)
	if err != nil {
		return nil, nil, err
	}
	client, err := app.NewClient(js, c, app.ClientConfig{Logger: log})
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return client, nc.Close, nil
}

// CapShowCmd prints the caps.
type CapShowCmd struct {
	NATSFlags
	Batch string `help:"The batch whose cap to show."`
	JSON  bool   `help:"Print JSON."`
}

// Run prints the caps.
func (s *CapShowCmd) Run(ctx context.Context, log *slog.Logger) error {
	client, closeNATS, err := s.capClient(ctx, log)
	if err != nil {
		return err
	}
	defer closeNATS()
	out := struct {
		Period *app.SpendAccount `json:"period"`
		Batch  *app.SpendAccount `json:"batch,omitempty"`
	}{}
	if a, ok, err := client.PeriodSpend(ctx); err != nil {
		return err
	} else if ok {
		out.Period = &a
	}
	if s.Batch != "" {
		a, ok, err := client.BatchSpend(ctx, s.Batch)
		if err != nil {
			return &exitError{code: 2, err: fmt.Errorf("--batch: %w", err)}
		}
		if ok {
			out.Batch = &a
		}
	}
	if s.JSON {
		return json.NewEncoder(os.Stdout).Encode(out)
	}
	if out.Period != nil {
		fmt.Printf("period cap ($%.2f per %s): %s\n", out.Period.CapUSD, shortDuration(out.Period.Period), out.Period)
	} else {
		fmt.Println("period cap: none (flashpipe cap set --period --max-cost N, or the processors' --spend-cap-usd)")
	}
	switch {
	case s.Batch != "" && out.Batch != nil:
		fmt.Printf("batch %s: %s\n", s.Batch, out.Batch)
	case s.Batch != "":
		fmt.Printf("batch %s: no cap (submit with --max-cost, or flashpipe cap set --batch %s --max-cost N)\n", s.Batch, s.Batch)
	}
	return nil
}

// CapSetCmd sets a cap.
type CapSetCmd struct {
	NATSFlags
	Batch   string        `help:"Set this batch's cap." xor:"scope"`
	Period  bool          `help:"Set the overall cap per period, shared by every processor replica." xor:"scope"`
	MaxCost float64       `help:"The cap in USD." required:""`
	Length  time.Duration `name:"period-length" help:"With --period: the length of a period (0: keep the one set, else 24h)." default:"0"`
	JSON    bool          `help:"Print JSON."`
}

// Run sets the cap and prints the account.
func (s *CapSetCmd) Run(ctx context.Context, log *slog.Logger) error {
	if s.Batch == "" && !s.Period {
		return &exitError{code: 2, err: errors.New("cap set: give --batch ID or --period")}
	}
	client, closeNATS, err := s.capClient(ctx, log)
	if err != nil {
		return err
	}
	defer closeNATS()
	var a app.SpendAccount
	if s.Period {
		a, err = client.SetPeriodCap(ctx, s.MaxCost, s.Length)
	} else {
		a, err = client.SetBatchCap(ctx, s.Batch, s.MaxCost)
	}
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("cap set: %w", err)}
	}
	if s.JSON {
		return json.NewEncoder(os.Stdout).Encode(a)
	}
	what := "period cap"
	if s.Batch != "" {
		what = "batch " + s.Batch
	}
	fmt.Printf("%s: %s\n", what, a)
	return nil
}
