package pageblob

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
)

// ErrContainerNotFound: the blob's container does not exist (and, for a
// target to create, could not be created). It matches ErrNotFound.
var ErrContainerNotFound error = &sentinel{"pageblob: container not found", ErrNotFound}

// createContainer creates the blob's missing container with a plain Create
// Container request (PUT ?restype=container) through the Blob's own
// pipeline and credential, as AzCopy does for a new destination (azblob's
// container package would pull in apache/arrow-go). A container created
// meanwhile by someone else is fine. A credential that may not create
// containers (a SAS for one blob or one container, an Azure AD identity
// without a data contributor role) gets an error naming the container.
func (b *Blob) createContainer(ctx context.Context) error {
	resp, err := b.cl.do(ctx, http.MethodPut, b.loc.containerURL()+"?restype=container", nil, http.StatusCreated)
	if err == nil {
		resp.Body.Close()
		return nil
	}
	if bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
		return nil
	}
	var re *azcore.ResponseError
	var why string
	switch {
	case bloberror.HasCode(err, bloberror.ContainerBeingDeleted):
		why = "it is being deleted; try again later"
	case errors.As(err, &re) && (re.StatusCode == http.StatusForbidden || re.StatusCode == http.StatusUnauthorized):
		why = fmt.Sprintf("and the credential (%s) may not create it (HTTP %d %s): create the container, or use a credential that may "+
			"(an account key or connection string, an account SAS with container create permission, an Azure AD identity "+
			"with a data contributor role)", b.cl.auth.cred.Kind, re.StatusCode, re.ErrorCode)
	case errors.As(err, &re):
		why = fmt.Sprintf("and creating it failed (HTTP %d %s)", re.StatusCode, re.ErrorCode)
	default:
		return b.wrap("create", 0, 0, err)
	}
	return b.containerError("create", b.loc.containerURL(), err, why)
}

// noContainer turns Azure's ContainerNotFound into an error that names
// the container; other errors are returned as they are.
func (b *Blob) noContainer(err error) error {
	if !bloberror.HasCode(err, bloberror.ContainerNotFound) {
		return err
	}
	return b.containerError("open", b.loc.String(), err, "")
}

// containerError is the Error of a missing container: its message names
// the container, then why (if not ""); it keeps the status and code of
// Azure's answer, and matches ErrContainerNotFound and ErrNotFound.
func (b *Blob) containerError(op, u string, err error, why string) *Error {
	msg := fmt.Sprintf("the container %q of account %s does not exist", b.loc.Container, b.loc.Account)
	if why != "" {
		msg += ", " + why
	}
	e := &Error{Op: op, URL: Redact(u), Kind: ErrContainerNotFound, Err: errors.New(scrub(msg))}
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		e.Status, e.Code = re.StatusCode, re.ErrorCode
	}
	return e
}
