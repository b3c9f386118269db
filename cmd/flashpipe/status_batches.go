package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/flashpipe/flashpipe/app"
)

// maxProviderBatchesShown bounds the finished provider batches status lists.
const maxProviderBatchesShown = 10

// printProviderBatches lists provider batches (batch mode): every unfinished one and
// the last finished ones, with id, state, counts and age.
func printProviderBatches(w io.Writer, pbs []app.ProviderBatch, indent string) {
	if len(pbs) == 0 {
		return
	}
	open := 0
	for _, pb := range pbs {
		if !pb.Final() {
			open++
		}
	}
	fmt.Fprintf(w, "%sprovider batches: %d unfinished, %d in all\n", indent, open, len(pbs))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "%s  KEY\tPROVIDER ID\tSTAGE\tSTATE\tREQUESTS\tDONE\tFAILED\tAGE\tOUTCOME\n", indent)
	finished := 0
	for _, pb := range pbs {
		if pb.Final() {
			if finished++; finished > maxProviderBatchesShown {
				continue
			}
		}
		state := pb.State
		if pb.ProviderState != "" && !pb.Final() {
			state += " (" + pb.ProviderState + ")"
		}
		fmt.Fprintf(tw, "%s  %s\t%s\t%d\t%s\t%d\t%d\t%d\t%s\t%s\n", indent, pb.Key, orDash(pb.ProviderID), pb.Stage, state,
			pb.Total, pb.Completed, pb.Failed, time.Since(pb.CreatedAt).Round(time.Second), pb.Outcome)
	}
	_ = tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
