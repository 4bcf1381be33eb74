"""Attempts: their RPCs (servicer), the checks of what a caller sends (validation), the
wire forms of stored documents (convert), imports of the prototype's documents
(importing), and streamed model downloads (downloads)."""
