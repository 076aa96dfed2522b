//! Enums named by words in pipeline files. [`words!`](crate::words) declares each word
//! once, beside its variant; the list of words, the parser, the name and the error of an
//! unknown word all follow from that one declaration.

/// What [`words!`](crate::words) gives a type, for code generic over word enums (a
/// parameter's parser, say).
pub trait Words: Sized + Copy + 'static {
    /// What a word names, for errors ("unknown dataset `cifar`").
    const NOUN: &'static str;
    const NAMES: &'static [&'static str];
    /// `"none"`, then [`Self::NAMES`]: the words of a parameter that may name no variant.
    const NAMES_OR_NONE: &'static [&'static str];
    fn parse(word: &str) -> Option<Self>;
}

/// Implements, for a unit-variant enum, `NAMES` (the words in declaration order), `ALL`,
/// `parse(&str) -> Option<Self>`, `name(self) -> &'static str`, `Display` (the word),
/// `FromStr` (an unknown word is an error naming `noun` and the words), [`Words`] and
/// [`Param`](crate::declare::Param) (a parameter of this type).
///
/// ```
/// #[derive(Clone, Copy, Debug, PartialEq)]
/// enum Fruit { Apple, BloodOrange }
/// wfpipe_stages::words!(Fruit, "fruit", { Apple = "apple", BloodOrange = "blood-orange" });
/// assert_eq!(Fruit::NAMES, ["apple", "blood-orange"]);
/// assert_eq!(Fruit::ALL, [Fruit::Apple, Fruit::BloodOrange]);
/// assert_eq!(Fruit::parse("blood-orange"), Some(Fruit::BloodOrange));
/// assert_eq!(Fruit::Apple.to_string(), "apple");
/// assert_eq!("pear".parse::<Fruit>().unwrap_err(), r#"unknown fruit `pear`, expected one of ["apple", "blood-orange"]"#);
/// ```
#[macro_export]
macro_rules! words {
    ($ty:ident, $noun:literal, { $($variant:ident = $word:literal),+ $(,)? }) => {
        impl $ty {
            /// The words, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($word),+];
            /// The variants, in the same order.
            #[allow(dead_code)]
            pub const ALL: &'static [Self] = &[$($ty::$variant),+];

            pub fn parse(word: &str) -> Option<Self> {
                match word {
                    $($word => Some($ty::$variant),)+
                    _ => None,
                }
            }

            pub fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $word,)+
                }
            }
        }

        impl $crate::words::Words for $ty {
            const NOUN: &'static str = $noun;
            const NAMES: &'static [&'static str] = $ty::NAMES;
            const NAMES_OR_NONE: &'static [&'static str] = &["none", $($word),+];
            fn parse(word: &str) -> Option<Self> {
                $ty::parse(word)
            }
        }

        impl $crate::declare::Param for $ty {
            const TYPE: $crate::kind::ParamType = $crate::kind::ParamType::Enum($ty::NAMES);
            fn from_value(name: &str, value: &$crate::kind::Value) -> Result<Self, $crate::kind::StageError> {
                $crate::declare::word_from_value(name, value)
            }
            fn into_value(self) -> $crate::kind::Value {
                $crate::kind::Value::Str(self.name().to_owned())
            }
        }

        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl ::std::str::FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $ty::parse(s).ok_or_else(|| format!("unknown {} `{s}`, expected one of {:?}", $noun, $ty::NAMES))
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use crate::coupling::Coupling;
    use crate::data::DatasetName;
    use crate::flow::estimate::Output;
    use crate::flow::SourceMode;
    use crate::geometry::Geometry;
    use crate::rt::graph::{Positions, TimeChannel};
    use crate::rt::pairs::Attention;
    use crate::sample::VelocityRule;

    /// An enum that is also written by serde (flow.json, metadata) must spell each variant
    /// as the pipeline file does, or a file written by one could not be read by the other.
    fn serde_agrees<T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug + Copy>(
        all: &[T],
        names: &[&str],
    ) {
        assert_eq!(all.len(), names.len());
        for (v, word) in all.iter().zip(names) {
            assert_eq!(serde_json::to_string(v).unwrap(), format!("\"{word}\""));
            assert_eq!(serde_json::from_str::<T>(&format!("\"{word}\"")).unwrap(), *v);
        }
    }

    #[test]
    fn serde_words_are_the_pipeline_words() {
        serde_agrees(Geometry::ALL, Geometry::NAMES);
        serde_agrees(Coupling::ALL, Coupling::NAMES);
        serde_agrees(TimeChannel::ALL, TimeChannel::NAMES);
        serde_agrees(Positions::ALL, Positions::NAMES);
        serde_agrees(Attention::ALL, Attention::NAMES);
        serde_agrees(Output::ALL, Output::NAMES);
        serde_agrees(SourceMode::ALL, SourceMode::NAMES);
        serde_agrees(VelocityRule::ALL, VelocityRule::NAMES);
    }

    #[test]
    fn words_parse_back_and_unknown_words_name_the_choices() {
        for (v, word) in Geometry::ALL.iter().zip(Geometry::NAMES) {
            assert_eq!(Geometry::parse(word), Some(*v));
            assert_eq!(v.to_string(), *word);
            assert_eq!(word.parse::<Geometry>(), Ok(*v));
        }
        assert_eq!(Geometry::parse("Euclidean"), None, "words are case-sensitive");
        assert_eq!(
            "spherical".parse::<Geometry>().unwrap_err(),
            r#"unknown geometry `spherical`, expected one of ["euclidean", "normalized", "geometric"]"#
        );
    }

    #[test]
    fn a_dataset_parameter_that_may_be_none_lists_none_then_the_datasets() {
        assert_eq!(DatasetName::OR_NONE[0], "none");
        assert_eq!(&DatasetName::OR_NONE[1..], DatasetName::NAMES);
    }
}
