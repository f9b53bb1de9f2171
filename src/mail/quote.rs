//! The new text of a reply: quoted history, attribution lines and signatures removed.
