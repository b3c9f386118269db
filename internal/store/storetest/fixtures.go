package storetest

import (
	"fmt"
	"strings"
	"time"

	"github.com/flashpipe/flashpipe"
)

// base is the time the fixtures start from.
var base = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// NewManifest returns a generation 0 manifest of count items created at created.
func NewManifest(batchID string, count int, created time.Time) flashpipe.Manifest {
	return flashpipe.Manifest{
		BatchID:     batchID,
		Count:       count,
		Source:      "vocabulary_1000.csv",
		ContentHash: "sha256:" + strings.Repeat("ab", 16),
		Settings:    map[string]string{"model": "sim/flash", "prompt_version": "3"},
		CreatedAt:   created,
	}
}

// NewResult returns a realistic ok result of item seq (position seq*10) of batchID in
// generation gen: an analysis of about 1 KB of JSON and three cards of about 600 bytes.
func NewResult(batchID string, seq, gen int) *flashpipe.Result {
	term := fmt.Sprintf("남성%d", seq)
	other := "a male (animal); masculinity; (grammar) the masculine gender, in older usage"
	usage := "Formal registers: news, forms, statistics and official documents."
	a := &flashpipe.Analysis{
		TermNumber:        int64(seq * 10),
		Term:              term + "[nam.sʌŋ]",
		IPA:               "/nam.sʌŋ/",
		POS:               "noun",
		PrimaryMeaning:    "man, male (formal, used in statistics, forms and news)",
		OtherMeanings:     &other,
		Metaphor:          "A tall man in a grey suit stands at a government counter, stamping a form marked 'M' with a heavy brass stamp that echoes through the hall.",
		MetaphorNoun:      "brass stamp",
		MetaphorAction:    "stamping the 'M' box",
		SuggestedLocation: "the front door of the memory palace",
		AnchorObject:      "a brass stamp",
		AnchorSensory:     "the cold weight of the stamp and the thud on paper",
		Explanation:       "The official counter stands for the formal, administrative register of 남성; the 'M' box is the male category it names.",
		UsageContext:      &usage,
		Comparison:        &flashpipe.Comparison{Vs: "남자", Nuance: "남자 is everyday speech; 남성 is formal and statistical."},
		Homonyms: []flashpipe.Homonym{
			{Hanja: "男性", Reading: "남성", Meaning: "male", Differentiator: "this term"},
			{Hanja: "南星", Reading: "남성", Meaning: "southern star", Differentiator: "astronomy, rare"},
		},
		KoreanKeywords: []string{"남자", "여성", "성별", "남녀"},
	}
	back := strings.Repeat("The brass stamp thuds onto the form, the ink smells sharp and metallic, and the clerk nods. ", 5)
	cards := make([]flashpipe.Card, 3)
	for i, tab := range []string{"Scene", "Usage-Comparison", "Hanja"} {
		cards[i] = flashpipe.Card{
			TabName:        tab,
			Primer:         fmt.Sprintf("Walk to the NOUN wing, room %d: %s", seq*10, term),
			Front:          fmt.Sprintf("Which formal word for 'man' is stamped on the form at the counter? (%s card %d)", tab, i),
			Back:           back,
			Tags:           fmt.Sprintf("term:%s,pos:noun,card:%s,concept:gender", term, strings.ToLower(tab)),
			HonorificLevel: "formal",
		}
	}
	return &flashpipe.Result{
		BatchID:    batchID,
		Seq:        seq,
		Generation: gen,
		Item:       flashpipe.Item{Position: int64(seq * 10), Term: term, Type: "noun"},
		Status:     flashpipe.StatusOK,
		Analysis:   a,
		Cards:      cards,
		Attempts:   1,
		Usage: flashpipe.Usage{
			Stage1Calls: 1, Stage2Calls: 1, PromptTokens: 850, CompletionTokens: 620, Cost: 0.0005,
		},
		ProcessedAt: base.Add(time.Duration(seq) * time.Millisecond),
	}
}

// NewFailed returns a failed result of item seq of batchID in generation gen.
func NewFailed(batchID string, seq, gen int) *flashpipe.Result {
	return &flashpipe.Result{
		BatchID:    batchID,
		Seq:        seq,
		Generation: gen,
		Item:       flashpipe.Item{Position: int64(seq * 10), Term: fmt.Sprintf("실패%d", seq), Type: "verb"},
		Status:     flashpipe.StatusFailed,
		Failure: &flashpipe.Failure{
			Stage:    "stage1",
			Reason:   "API answered 402: out of credits",
			Class:    flashpipe.Permanent,
			NextStep: flashpipe.NextRaiseLimit,
		},
		Attempts:    3,
		Usage:       flashpipe.Usage{Stage1Calls: 3},
		ProcessedAt: base.Add(time.Duration(seq) * time.Millisecond),
	}
}

// ManifestEvent, ResultEvent and CompleteEvent wrap their argument in an Event.
func ManifestEvent(m flashpipe.Manifest) flashpipe.Event {
	return flashpipe.Event{Kind: flashpipe.EventManifest, Manifest: &m}
}

// ResultEvent wraps r in an Event.
func ResultEvent(r *flashpipe.Result) flashpipe.Event {
	return flashpipe.Event{Kind: flashpipe.EventResult, Result: r}
}

// CompleteEvent returns the completion event of generation gen of batchID.
func CompleteEvent(batchID string, gen, emitted int, at time.Time) flashpipe.Event {
	return flashpipe.Event{Kind: flashpipe.EventComplete, Completion: &flashpipe.Completion{
		BatchID: batchID, Generation: gen, Emitted: emitted, CompletedAt: at,
	}}
}

// UTCMicroOf is t as the stores return it: UTC, to the microsecond.
func UTCMicroOf(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }
