package stages

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"text/template/parse"

	"github.com/flashpipe/flashpipe"
)

// Versions of the default prompts. They are part of the cache keys: bump one whenever
// its stage's default prompt, schema or answer parsing changes what is cached.
const (
	Stage1PromptVersion = "s1-v1"
	Stage2PromptVersion = "s2-v1"
)

// File names LoadPrompts looks for.
const (
	Stage1SystemFile = "stage1_system.tmpl"
	Stage1UserFile   = "stage1_user.tmpl"
	Stage2SystemFile = "stage2_system.tmpl"
	Stage2UserFile   = "stage2_user.tmpl"
)

// Prompts are the four prompt templates (text/template, executed with TemplateData)
// and the version of each stage's pair. The machine-readable input block is appended
// to every user message by the request builders; templates must not write it.
//
// Use DefaultPrompts, LoadPrompts or Compile to get a Prompts whose templates are
// parsed once; a Prompts built by hand works too but is parsed on every request.
// A Prompts is an immutable value, safe to share.
type Prompts struct {
	Stage1System, Stage1User, Stage2System, Stage2User string
	// Version1 and Version2 name each stage's prompts in cache keys. A stage whose
	// templates are the defaults always has the default constant; an overridden
	// stage has the version set here, or when it is empty (or the default constant)
	// "s1-custom-<8 hex>" / "s2-custom-<8 hex>", a hash of its two templates. Compile
	// fills them in.
	Version1, Version2 string

	c *compiledPrompts
}

// TemplateData is what the prompt templates are executed with.
type TemplateData struct {
	// TermNumber is the item's position.
	TermNumber int64
	// Term is the item's term as submitted.
	Term string
	// Type is the item's normalised part of speech.
	Type string
	// POS is the part of speech to write on cards: the analysis's pos in stage 2, else
	// Type. POSUpper is the same in capitals.
	POS, POSUpper string
	// Analysis is the stage 1 result (stage 2 only).
	Analysis *flashpipe.Analysis
	// Primers are the primers of the default card tabs (stage 2 only).
	Primers []PrimerLine
}

// PrimerLine is one tab's primer.
type PrimerLine struct{ Tab, Text string }

// The template slots.
const (
	slotS1System = iota
	slotS1User
	slotS2System
	slotS2User
	numSlots
)

var slotFiles = [numSlots]string{Stage1SystemFile, Stage1UserFile, Stage2SystemFile, Stage2UserFile}

type compiledPrompts struct {
	src      [numSlots]string
	tmpl     [numSlots]*template.Template
	static   [numSlots]string // rendered text of templates that ignore their data
	isStatic [numSlots]bool
	native   [numSlots]bool // the default user template: rendered by Go code
	version1 string
	version2 string
}

// defaults is the parsed default prompts: built once, never modified.
var defaults = func() *compiledPrompts {
	c, err := compile([numSlots]string{defaultStage1System, defaultStage1User, defaultStage2System, defaultStage2User},
		Stage1PromptVersion, Stage2PromptVersion)
	if err != nil {
		panic("stages: default prompts: " + err.Error())
	}
	return c
}()

// DefaultPrompts returns the built-in prompts.
func DefaultPrompts() Prompts {
	return Prompts{
		Stage1System: defaultStage1System,
		Stage1User:   defaultStage1User,
		Stage2System: defaultStage2System,
		Stage2User:   defaultStage2User,
		Version1:     Stage1PromptVersion,
		Version2:     Stage2PromptVersion,
		c:            defaults,
	}
}

// LoadPrompts returns the default prompts with each of stage1_system.tmpl,
// stage1_user.tmpl, stage2_system.tmpl and stage2_user.tmpl found in dir replacing its
// default (an empty dir means the defaults). A stage with an overridden template gets
// the version
// "s<stage>-custom-<first 8 hex of the sha256 of its two templates>". A missing dir or
// file is not an error; a template that does not parse or execute is.
func LoadPrompts(dir string) (Prompts, error) {
	p := DefaultPrompts()
	if dir == "" {
		return p, nil
	}
	fields := [numSlots]*string{&p.Stage1System, &p.Stage1User, &p.Stage2System, &p.Stage2User}
	for i, name := range slotFiles {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return Prompts{}, fmt.Errorf("stages: loading prompts: %w", err)
		}
		*fields[i] = string(b)
	}
	return p.Compile()
}

// Compile parses and checks p's templates (an empty one means the default), sets the
// versions (see Prompts) and returns a Prompts that renders without re-parsing.
func (p Prompts) Compile() (Prompts, error) {
	src := p.sources()
	v1 := resolveVersion(1, p.Version1, src[slotS1System], src[slotS1User], defaultStage1System, defaultStage1User, Stage1PromptVersion)
	v2 := resolveVersion(2, p.Version2, src[slotS2System], src[slotS2User], defaultStage2System, defaultStage2User, Stage2PromptVersion)
	c, err := compile(src, v1, v2)
	if err != nil {
		return Prompts{}, err
	}
	return Prompts{
		Stage1System: src[slotS1System], Stage1User: src[slotS1User],
		Stage2System: src[slotS2System], Stage2User: src[slotS2User],
		Version1: v1, Version2: v2, c: c,
	}, nil
}

func (p Prompts) sources() [numSlots]string {
	src := [numSlots]string{p.Stage1System, p.Stage1User, p.Stage2System, p.Stage2User}
	for i, d := range [numSlots]string{defaultStage1System, defaultStage1User, defaultStage2System, defaultStage2User} {
		if strings.TrimSpace(src[i]) == "" {
			src[i] = d
		}
	}
	return src
}

func resolveVersion(stage int, given, sys, user, defSys, defUser, defVersion string) string {
	if sys == defSys && user == defUser {
		return defVersion
	}
	if given != "" && given != defVersion {
		return given
	}
	h := sha256.New()
	h.Write([]byte(sys))
	h.Write([]byte{0})
	h.Write([]byte(user))
	return fmt.Sprintf("s%d-custom-%s", stage, hex.EncodeToString(h.Sum(nil))[:8])
}

// resolved returns p's compiled prompts: its cache when it matches p's texts, else p
// compiled now, else (templates that do not compile) the defaults.
func (p Prompts) resolved() *compiledPrompts {
	if p.c != nil && p.c.src == [numSlots]string{p.Stage1System, p.Stage1User, p.Stage2System, p.Stage2User} {
		return p.c
	}
	if p == (Prompts{}) {
		return defaults
	}
	cp, err := p.Compile()
	if err != nil {
		return defaults
	}
	return cp.c
}

// versions returns the prompt versions in effect for p rendered with c (see Prompts).
func (p Prompts) versions(c *compiledPrompts) (v1, v2 string) {
	v1, v2 = c.version1, c.version2
	if p.Version1 != "" && p.Version1 != v1 && c != defaults {
		v1 = resolveVersion(1, p.Version1, c.src[slotS1System], c.src[slotS1User], defaultStage1System, defaultStage1User, Stage1PromptVersion)
	}
	if p.Version2 != "" && p.Version2 != v2 && c != defaults {
		v2 = resolveVersion(2, p.Version2, c.src[slotS2System], c.src[slotS2User], defaultStage2System, defaultStage2User, Stage2PromptVersion)
	}
	return v1, v2
}

func compile(src [numSlots]string, v1, v2 string) (*compiledPrompts, error) {
	c := &compiledPrompts{src: src, version1: v1, version2: v2}
	for i, s := range src {
		t, err := template.New(slotFiles[i]).Option("missingkey=error").Parse(s)
		if err != nil {
			return nil, fmt.Errorf("stages: prompt %s: %w", slotFiles[i], err)
		}
		c.tmpl[i] = t
		// Check the template on two different items.
		var a, b bytes.Buffer
		if err := t.Execute(&a, sampleData(i, 0)); err != nil {
			return nil, fmt.Errorf("stages: prompt %s: %w", slotFiles[i], err)
		}
		if err := t.Execute(&b, sampleData(i, 1)); err != nil {
			return nil, fmt.Errorf("stages: prompt %s: %w", slotFiles[i], err)
		}
		if strings.TrimSpace(a.String()) == "" {
			return nil, fmt.Errorf("stages: prompt %s renders to nothing", slotFiles[i])
		}
		// A template of text only is rendered once.
		if isText(t) {
			c.static[i], c.isStatic[i] = strings.TrimSpace(a.String()), true
		}
		c.native[i] = (i == slotS1User && s == defaultStage1User) || (i == slotS2User && s == defaultStage2User)
	}
	return c, nil
}

// isText reports whether t has no actions, only text.
func isText(t *template.Template) bool {
	if t.Tree == nil || t.Root == nil {
		return false
	}
	for _, n := range t.Root.Nodes {
		if n.Type() != parse.NodeText {
			return false
		}
	}
	return len(t.Templates()) <= 1
}

func sampleData(slot, n int) *TemplateData {
	items := []flashpipe.Item{{Position: 7, Term: "남성", Type: "noun"}, {Position: 1234, Term: "빠르다", Type: "adjective"}}
	it := items[n]
	if slot == slotS2System || slot == slotS2User {
		return stage2Data(it, sampleAnalysis(it))
	}
	return stage1Data(it)
}

func sampleAnalysis(it flashpipe.Item) *flashpipe.Analysis {
	s := "sample"
	return &flashpipe.Analysis{
		TermNumber: it.Position, Term: it.Term + "[x]", IPA: "x", POS: it.Type,
		PrimaryMeaning: s, OtherMeanings: &s, Metaphor: s, MetaphorNoun: s, MetaphorAction: s,
		SuggestedLocation: s, AnchorObject: s, AnchorSensory: s, Explanation: s, UsageContext: &s,
		Comparison:     &flashpipe.Comparison{Vs: s, Nuance: s},
		Homonyms:       []flashpipe.Homonym{{Hanja: s, Reading: s, Meaning: s, Differentiator: s}},
		KoreanKeywords: []string{s},
	}
}

func stage1Data(it flashpipe.Item) *TemplateData {
	t := flashpipe.NormalizeType(it.Type)
	return &TemplateData{TermNumber: it.Position, Term: it.Term, Type: t, POS: t, POSUpper: strings.ToUpper(t)}
}

func stage2Data(it flashpipe.Item, a *flashpipe.Analysis) *TemplateData {
	t := flashpipe.NormalizeType(it.Type)
	pos := cardPOS(it, a)
	d := &TemplateData{TermNumber: it.Position, Term: it.Term, Type: t, POS: pos, POSUpper: strings.ToUpper(pos), Analysis: a}
	tabs := DefaultTabs()
	d.Primers = make([]PrimerLine, len(tabs))
	for i, tab := range tabs {
		d.Primers[i] = PrimerLine{Tab: tab, Text: Primer(pos, it.Position, it.Term, tab)}
	}
	return d
}

// render writes slot's prompt for data to sb. A custom template that fails for this
// item falls back to the default one.
func (c *compiledPrompts) render(sb *strings.Builder, slot int, data *TemplateData) {
	var buf bytes.Buffer
	c.renderTo(&buf, slot, data)
	sb.Write(buf.Bytes())
}

// renderTo appends slot's prompt for data to buf, falling back to the default
// template if a custom one fails for this item.
func (c *compiledPrompts) renderTo(buf *bytes.Buffer, slot int, data *TemplateData) {
	if c.isStatic[slot] {
		buf.WriteString(c.static[slot])
		return
	}
	if c.native[slot] {
		renderDefaultUser(buf, slot, data)
		return
	}
	n := buf.Len()
	if err := c.tmpl[slot].Execute(buf, data); err == nil || c == defaults {
		return
	}
	buf.Truncate(n)
	defaults.renderTo(buf, slot, data)
}

// renderDefaultUser writes what the default user template of slot renders, without
// text/template's reflection (a test checks the two agree).
func renderDefaultUser(buf *bytes.Buffer, slot int, d *TemplateData) {
	var num [20]byte
	switch slot {
	case slotS1User:
		buf.WriteString("Analyse term number ")
		buf.Write(strconv.AppendInt(num[:0], d.TermNumber, 10))
		buf.WriteString(": ")
		buf.WriteString(d.Term)
		buf.WriteString(" (given part of speech: ")
		buf.WriteString(d.Type)
		buf.WriteString(").")
	case slotS2User:
		buf.WriteString("Write the flashcards for term number ")
		buf.Write(strconv.AppendInt(num[:0], d.TermNumber, 10))
		buf.WriteString(": ")
		buf.WriteString(d.Term)
		buf.WriteString(" (")
		buf.WriteString(d.POS)
		buf.WriteString("), using its analysis in the input below.\n\n")
		buf.WriteString("Primers (copy exactly into each card's primer; for another tab, the same words with that tab's name):\n")
		for _, p := range d.Primers {
			buf.WriteString("- ")
			buf.WriteString(p.Tab)
			buf.WriteString(": ")
			buf.WriteString(p.Text)
			buf.WriteByte('\n')
		}
	}
}
