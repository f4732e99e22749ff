package ticketkeys

// Version is the plugin's semantic version. Vault requires the version given at
// `vault plugin register -version=...` to equal what the running plugin reports,
// so the bootstrap scripts and the end-to-end harness read it from here.
const Version = "v0.1.0"
