package main

import (
	"context"
	"os"

	"github.com/deltasync/deltasync/pageblob"
	"github.com/deltasync/deltasync/transfer"
)

// Recovery points of page blob targets (-snapshot): a run that changed
// nothing cuts no new one. The target is then as it was when the run
// began, and it held no unfinished run's writes (it was not marked
// incomplete, the run did not resume): the blob's latest recovery point,
// if a run with -snapshot cut the last change, already holds this state.
// The hole: a blob changed since its last point by something that cut
// none (a run with -snapshot=false, another tool) keeps that point as
// its latest; 'deltasync snapshots URL' lists them with their times.

// pointWatch is what a run onto a page blob must know, before it starts,
// to tell whether its recovery point may be left out.
type pointWatch struct {
	t          *blobTarget // nil: not a page blob that gets points
	incomplete bool        // marked incomplete before the run, or unknown
}

// watchPoints looks at dst before the run (one request for a page blob
// target with -snapshot).
func watchPoints(ctx context.Context, dst opened) pointWatch {
	t, ok := dst.(*blobTarget)
	if !ok || !t.flags.snapshot || t.managed { // managed disk uploads have no snapshots
		return pointWatch{}
	}
	octx, stop := openContext()
	defer stop()
	inc, err := t.Incomplete(octx)
	return pointWatch{t: t, incomplete: inc || err != nil}
}

// skip returns why the run's recovery point is left out, or "" when it
// is to be cut (finishTarget). It says so on stderr. A blob with no
// recovery point yet (a new one, all zeros) gets one, and so does a blob
// whose snapshots cannot be listed (a SAS for the blob alone).
func (p pointWatch) skip(ctx context.Context, st transfer.Stats) string {
	if p.t == nil || p.incomplete || st.Resumed || p.t.Resumed() ||
		st.Written > 0 || st.Zeroed > 0 || st.ResizedFrom >= 0 {
		return ""
	}
	list, err := p.t.ListSnapshots(ctx)
	if err != nil {
		return ""
	}
	found := false
	for _, s := range list {
		found = found || s.Kind == pageblob.KindRecoveryPoint
	}
	if !found {
		return ""
	}
	why := "the run wrote nothing: the target is as it was, and its latest recovery point, if the last change cut one, holds it"
	os.Stderr.WriteString("deltasync: no new recovery point of " + p.t.URL() + ": " + why + " ('deltasync snapshots' lists them)\n")
	return why
}
