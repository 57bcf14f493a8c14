-- What each host's plugin for a vendor accepts without asking the vendor (its WIT 0.5
-- `catalogue`): JSON `{"regions": [...] | null, "sizes": ..., "images": ...}`, or NULL when
-- the host did not say (an older host, or a plugin of WIT 0.4 and before). GET
-- /v1/vendors/{vendor}/catalogue serves what every host serving the vendor accepts.
ALTER TABLE vendor_hosts ADD COLUMN catalogue TEXT;
