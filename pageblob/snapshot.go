package pageblob

import (
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// SnapshotInfo describes one snapshot of a blob.
type SnapshotInfo struct {
	ID   string    // the snapshot id, a timestamp chosen by Azure
	Time time.Time // ID parsed (zero if it does not parse)
	Size int64     // the blob's size at the snapshot (with a VHD's footer)
	ETag string
	// Kind is what deltasync took the snapshot as: KindPrior,
	// KindRecoveryPoint, or "" for a snapshot taken by anything else.
	Kind string
	// Owner is the replication that cut a recovery point
	// (RecoveryPointOf), or "".
	Owner string
}

// Snapshot takes a snapshot of the blob and returns its id, the time
// Azure's server stamped on it (not this machine's clock). A snapshot is
// a recovery point: cut it after the writes of a cycle are done. In
// target mode the request carries the lease ID. A blob marked incomplete
// (a run writing it has not finished: IncompleteKey) is refused with
// ErrIncomplete. Managed disk uploads have no snapshots (ErrNotSupported).
func (b *Blob) Snapshot(ctx context.Context) (string, error) {
	if err := b.snapshotsAllowed("snapshot"); err != nil {
		return "", err
	}
	if b.loc.Snapshot != "" {
		return "", b.refuse("snapshot", 0, 0, ErrReadOnly, "a snapshot cannot be snapshotted")
	}
	if err := b.refuseIncomplete(ctx); err != nil {
		return "", err
	}
	id, err := b.snapshot(ctx, "", "")
	if err != nil {
		return "", b.wrap("snapshot", 0, 0, err)
	}
	return id, nil
}

func (b *Blob) snapshotsAllowed(op string) error {
	if b.closed.Load() {
		return b.wrap(op, 0, 0, ErrClosed)
	}
	if b.mode == modeUpload {
		return b.refuse(op, 0, 0, ErrNotSupported, "a managed disk upload has no snapshots")
	}
	return nil
}

// OpenSnapshot opens a snapshot of this blob as a read-only source. It
// shares the Blob's credentials and request limiter, and stays usable
// after the Blob is closed.
func (b *Blob) OpenSnapshot(ctx context.Context, id string) (*Blob, error) {
	if err := b.snapshotsAllowed("open"); err != nil {
		return nil, err
	}
	if id == "" {
		return nil, b.refuse("open", 0, 0, ErrNotFound, "empty snapshot id")
	}
	s, err := newBlob(b.cl, b.loc.WithSnapshot(id), modeRead, b.vhd)
	if err != nil {
		return nil, err
	}
	if err := s.init(ctx, false); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// DeleteSnapshot deletes one snapshot of this blob (a recovery point that
// the retention policy dropped).
func (b *Blob) DeleteSnapshot(ctx context.Context, id string) error {
	if err := b.snapshotsAllowed("delete"); err != nil {
		return err
	}
	if id == "" {
		return b.refuse("delete", 0, 0, ErrNotFound, "empty snapshot id")
	}
	loc := b.loc.WithSnapshot(id)
	c, err := b.cl.pageBlob(loc)
	if err != nil {
		return newError("delete", loc.String(), 0, 0, err)
	}
	if _, err := c.Delete(ctx, nil); err != nil {
		return newError("delete", loc.String(), 0, 0, err)
	}
	return nil
}

// listResult is the part of a List Blobs answer that ListSnapshots reads.
type listResult struct {
	Blobs []struct {
		Name       string `xml:"Name"`
		Snapshot   string `xml:"Snapshot"`
		Properties struct {
			ContentLength int64  `xml:"Content-Length"`
			ETag          string `xml:"Etag"`
		} `xml:"Properties"`
		Metadata struct {
			Items []struct {
				XMLName xml.Name
				Value   string `xml:",chardata"`
			} `xml:",any"`
		} `xml:"Metadata"`
	} `xml:"Blobs>Blob"`
	NextMarker string `xml:"NextMarker"`
}

// ListSnapshots lists the snapshots of this blob, oldest first (List
// Blobs on the container with include=snapshots,metadata and the blob's
// name as prefix, following NextMarker), with the kind of those deltasync
// took (SnapshotInfo.Kind). It needs list permission on the
// container: a SAS scoped to the blob alone cannot list (ErrAuth).
func (b *Blob) ListSnapshots(ctx context.Context) ([]SnapshotInfo, error) {
	if err := b.snapshotsAllowed("list"); err != nil {
		return nil, err
	}
	var out []SnapshotInfo
	marker := ""
	for {
		q := url.Values{"restype": {"container"}, "comp": {"list"}, "include": {"snapshots,metadata"}, "prefix": {b.loc.Blob}}
		if marker != "" {
			q.Set("marker", marker)
		}
		resp, err := b.cl.do(ctx, http.MethodGet, b.loc.containerURL()+"?"+q.Encode(), nil, http.StatusOK)
		if err != nil {
			return nil, b.wrap("list", 0, 0, err)
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
		resp.Body.Close()
		if err != nil {
			return nil, b.wrap("list", 0, 0, err)
		}
		var lr listResult
		if err := xml.Unmarshal(body, &lr); err != nil {
			return nil, b.wrap("list", 0, 0, fmt.Errorf("parsing List Blobs answer: %w", err))
		}
		for _, x := range lr.Blobs {
			if x.Name != b.loc.Blob || x.Snapshot == "" {
				continue
			}
			t, _ := time.Parse(time.RFC3339Nano, x.Snapshot)
			si := SnapshotInfo{ID: x.Snapshot, Time: t, Size: x.Properties.ContentLength, ETag: x.Properties.ETag}
			for _, m := range x.Metadata.Items {
				switch {
				case strings.EqualFold(m.XMLName.Local, SnapshotKindKey):
					si.Kind = m.Value
				case strings.EqualFold(m.XMLName.Local, SnapshotOwnerKey):
					si.Owner = m.Value
				}
			}
			out = append(out, si)
		}
		if lr.NextMarker == "" {
			break
		}
		marker = lr.NextMarker
	}
	return out, nil
}
