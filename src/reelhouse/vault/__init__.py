"""The vault domain (LegacyVideo): encrypted video messages released to recipients only after
k-of-n trusted verifiers approve, a waiting period passes without the owner's veto, or the
owner stops checking in and the verifiers confirm."""
