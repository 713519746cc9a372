// What medicine packs carry: GS1 DataMatrix (EU FMD / DSCSA), EAN-13/UPC-A on older packs,
// GS1-128 on cases, QR for GS1 Digital Link. Nothing else is decoded.
export const FORMATS = ["data_matrix", "ean_13", "upc_a", "code_128", "qr_code"] as const;
