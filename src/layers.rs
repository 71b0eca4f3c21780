//! Settings that come in layers: a flag (or its `CPVAULT_*` variable) over a config file
//! section over another section over the built-in default. [`layered_settings!`] declares a
//! family of settings once — each as a field of a clap argument group, with its flag,
//! variable and help — and derives from that one declaration the flat layer the config file
//! parses, the conversion of parsed flags into a layer, and the merge of two layers. This
//! module knows no setting by name and never reads a file or the environment itself.

/// How a parsed flag becomes a value of its layer: options and lists as they are; a switch
/// (a `bool` flag) only ever turns its setting on, so leaving it off leaves the decision to
/// the config file.
pub trait Flag {
    /// The setting's type in a layer.
    type Layer: Merge + Default + Clone;
    /// The flag's value as a layer value (unset when the flag was not given).
    fn layer(&self) -> Self::Layer;
}

impl<T: Clone> Flag for Option<T> {
    type Layer = Option<T>;
    fn layer(&self) -> Option<T> {
        self.clone()
    }
}

impl<T: Clone> Flag for Vec<T> {
    type Layer = Vec<T>;
    fn layer(&self) -> Vec<T> {
        self.clone()
    }
}

impl Flag for bool {
    type Layer = Option<bool>;
    fn layer(&self) -> Option<bool> {
        self.then_some(true)
    }
}

/// A layer value over a lower one: set wins; a list is set when it is not empty (lists are
/// replaced, never concatenated).
pub trait Merge {
    /// `self`, or `base` where `self` is unset.
    fn or(self, base: &Self) -> Self;
}

impl<T: Clone> Merge for Option<T> {
    fn or(self, base: &Self) -> Self {
        self.or_else(|| base.clone())
    }
}

impl<T: Clone> Merge for Vec<T> {
    fn or(self, base: &Self) -> Self {
        if self.is_empty() {
            base.clone()
        } else {
            self
        }
    }
}

/// Declares a family of layered settings once. From
///
/// ```text
/// layered_settings! {
///     /// The layer (config file section).
///     pub struct Layer;
///     /// All the family's flags.
///     pub struct Flags {
///         /// A group of flags (a clap `Args` struct, usable alone by other commands).
///         group_field: Group {
///             /// Help of the flag (and doc of the layer's key).
///             #[arg(long, env = "CPVAULT_…", …)]
///             setting: Option<T>,
///         },
///     }
/// }
/// ```
///
/// it generates each `Group` and `Flags` (clap argument groups, fields as written, groups
/// flattened in order), `Layer` (every setting as one flat serde table with unknown keys
/// refused; each field's type is its flag's [`Flag::Layer`]), `From<&Flags>` and
/// `From<&Group>` for `Layer` (settings the group lacks stay unset), and `Layer::or`.
macro_rules! layered_settings {
    (
        $(#[doc = $ldoc:tt])*
        pub struct $Layer:ident;
        $(#[doc = $fdoc:tt])*
        pub struct $Flags:ident {
            $(
                $(#[doc = $gdoc:tt])*
                $gfield:ident: $Group:ident {
                    $(
                        $(#[doc = $doc:tt])*
                        #[arg($($arg:tt)*)]
                        $field:ident: $ty:ty
                    ),* $(,)?
                }
            ),* $(,)?
        }
    ) => {
        $(
            $(#[doc = $gdoc])*
            #[derive(Debug, Default, Clone, clap::Args)]
            pub struct $Group {
                $(
                    $(#[doc = $doc])*
                    #[arg($($arg)*)]
                    pub $field: $ty,
                )*
            }

            impl From<&$Group> for $Layer {
                fn from(flags: &$Group) -> $Layer {
                    $Layer {
                        $($field: $crate::layers::Flag::layer(&flags.$field),)*
                        ..Default::default()
                    }
                }
            }
        )*

        $(#[doc = $fdoc])*
        #[derive(Debug, Default, Clone, clap::Args)]
        pub struct $Flags {
            $(
                $(#[doc = $gdoc])*
                #[command(flatten)]
                pub $gfield: $Group,
            )*
        }

        impl From<&$Flags> for $Layer {
            fn from(flags: &$Flags) -> $Layer {
                $Layer {
                    $($($field: $crate::layers::Flag::layer(&flags.$gfield.$field),)*)*
                }
            }
        }

        $(#[doc = $ldoc])*
        #[derive(Debug, Default, Clone, serde::Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $Layer {
            $($(
                $(#[doc = $doc])*
                pub $field: <$ty as $crate::layers::Flag>::Layer,
            )*)*
        }

        impl $Layer {
            /// Fields of `self`, with the unset ones taken from `base`.
            pub fn or(self, base: &$Layer) -> $Layer {
                $Layer {
                    $($($field: $crate::layers::Merge::or(self.$field, &base.$field),)*)*
                }
            }
        }
    };
}

pub(crate) use layered_settings;
