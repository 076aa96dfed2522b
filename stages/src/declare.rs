//! Parameters declared once. A kind lists its parameters as the fields of one struct in
//! [`kind_params!`](crate::kind_params); the schema (`ParamSpec`s, which `wfpipe kinds`
//! prints and the loader checks and fills defaults from), the defaults and the parser all
//! follow from that list, so a parameter's name, type, default and doc sit on one line.

use std::collections::BTreeMap;

use crate::kind::{ParamSpec, ParamType, Params, StageError, Value};
use crate::words::Words;

/// A Rust type a parameter can be read as.
pub trait Param: Sized {
    /// The schema type when the declaration names none.
    const TYPE: ParamType;
    fn from_value(name: &str, value: &Value) -> Result<Self, StageError>;
    /// The pipeline value of a default.
    fn into_value(self) -> Value;
}

/// What a parameter struct gives a kind.
pub trait KindParams: Sized {
    fn schema() -> Vec<ParamSpec>;
    /// Reads every parameter, checking each against its schema type (the loader checks
    /// them too; a kind run without it, from a test or a job file, is checked here).
    fn parse(params: &Params) -> Result<Self, StageError>;
}

/// A reference to another stage. The kind reads what it names through the context
/// (`ctx.input(name)`); the value says whether an optional reference was set.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StageRef(pub String);

impl StageRef {
    /// The default of an optional reference: not set.
    pub const NONE: StageRef = StageRef(String::new());
    pub fn is_set(&self) -> bool {
        !self.0.is_empty()
    }
}

/// The typed readers of [`Params`] for lists and maps, through the same [`Param`] impls
/// the parameter structs use: one reader per type.
impl Params {
    pub fn usize_list(&self, name: &str) -> Result<Vec<usize>, StageError> {
        self.typed(name)
    }
    pub fn f64_list(&self, name: &str) -> Result<Vec<f64>, StageError> {
        self.typed(name)
    }
    pub fn str_list(&self, name: &str) -> Result<Vec<String>, StageError> {
        self.typed(name)
    }
    pub fn str_map(&self, name: &str) -> Result<BTreeMap<String, String>, StageError> {
        self.typed(name)
    }
    /// One parameter read as a [`Param`] type.
    pub fn typed<P: Param>(&self, name: &str) -> Result<P, StageError> {
        P::from_value(name, self.get(name)?)
    }
}

fn wrong(name: &str, what: &str) -> StageError {
    StageError::Param(format!("parameter `{name}` is not {what}"))
}

/// Reads `name` from `params` as its declared type.
pub fn read<P: Param>(params: &Params, schema: &[ParamSpec], name: &str) -> Result<P, StageError> {
    let value = params.get(name)?;
    let typed = P::from_value(name, value)?;
    if let Some(spec) = schema.iter().find(|s| s.name == name) {
        check_range(name, &spec.ty, value)?;
    }
    Ok(typed)
}

fn check_range(name: &str, ty: &ParamType, value: &Value) -> Result<(), StageError> {
    let outside = match (ty, value) {
        (ParamType::Int { min, max }, Value::Int(i)) => min.is_some_and(|m| *i < m) || max.is_some_and(|m| *i > m),
        (ParamType::Float { min, max }, v) => {
            let x = v.as_f64().ok_or_else(|| wrong(name, "a number"))?;
            !x.is_finite() || min.is_some_and(|m| x < m) || max.is_some_and(|m| x > m)
        }
        (ParamType::Enum(words), Value::Str(s)) => !words.contains(&s.as_str()),
        _ => false,
    };
    if outside {
        return Err(StageError::Param(format!("`{name}` must be {}, got {}", ty.describe(), show(value))));
    }
    Ok(())
}

fn show(value: &Value) -> String {
    match value {
        Value::Str(s) => format!("\"{s}\""),
        Value::Int(i) => i.to_string(),
        Value::Float(x) => x.to_string(),
        other => format!("{other:?}"),
    }
}

impl Param for bool {
    const TYPE: ParamType = ParamType::Bool;
    fn from_value(name: &str, value: &Value) -> Result<Self, StageError> {
        match value {
            Value::Bool(b) => Ok(*b),
            _ => Err(wrong(name, "a boolean")),
        }
    }
    fn into_value(self) -> Value {
        Value::Bool(self)
    }
}

impl Param for usize {
    const TYPE: ParamType = ParamType::NON_NEGATIVE_INT;
    fn from_value(name: &str, value: &Value) -> Result<Self, StageError> {
        let i = value.as_i64().ok_or_else(|| wrong(name, "an integer"))?;
        usize::try_from(i).map_err(|_| StageError::Param(format!("parameter `{name}` must be >= 0, got {i}")))
    }
    fn into_value(self) -> Value {
        Value::Int(self as i64)
    }
}

impl Param for u64 {
    const TYPE: ParamType = ParamType::NON_NEGATIVE_INT;
    fn from_value(name: &str, value: &Value) -> Result<Self, StageError> {
        usize::from_value(name, value).map(|n| n as u64)
    }
    fn into_value(self) -> Value {
        Value::Int(self as i64)
    }
}

impl Param for f64 {
    const TYPE: ParamType = ParamType::FLOAT;
    fn from_value(name: &str, value: &Value) -> Result<Self, StageError> {
        value.as_f64().ok_or_else(|| wrong(name, "a number"))
    }
    fn into_value(self) -> Value {
        Value::Float(self)
    }
}

impl Param for String {
    const TYPE: ParamType = ParamType::Str;
    fn from_value(name: &str, value: &Value) -> Result<Self, StageError> {
        value.as_str().map(str::to_owned).ok_or_else(|| wrong(name, "a string"))
    }
    fn into_value(self) -> Value {
        Value::Str(self)
    }
}

impl Param for StageRef {
    const TYPE: ParamType = ParamType::Ref { mode: crate::kind::RefMode::FanOut };
    fn from_value(name: &str, value: &Value) -> Result<Self, StageError> {
        String::from_value(name, value).map(StageRef)
    }
    fn into_value(self) -> Value {
        Value::Str(self.0)
    }
}

fn list<'v>(name: &str, value: &'v Value) -> Result<&'v [Value], StageError> {
    match value {
        Value::List(items) => Ok(items),
        _ => Err(wrong(name, "an array")),
    }
}

impl Param for Vec<usize> {
    const TYPE: ParamType = ParamType::IntList;
    fn from_value(name: &str, value: &Value) -> Result<Self, StageError> {
        list(name, value)?
            .iter()
            .map(|v| {
                v.as_i64()
                    .and_then(|i| usize::try_from(i).ok())
                    .ok_or_else(|| StageError::Param(format!("parameter `{name}` must hold non-negative integers")))
            })
            .collect()
    }
    fn into_value(self) -> Value {
        Value::List(self.into_iter().map(|n| Value::Int(n as i64)).collect())
    }
}

impl Param for Vec<f64> {
    const TYPE: ParamType = ParamType::FloatList;
    fn from_value(name: &str, value: &Value) -> Result<Self, StageError> {
        list(name, value)?
            .iter()
            .map(|v| v.as_f64().ok_or_else(|| StageError::Param(format!("parameter `{name}` must hold numbers"))))
            .collect()
    }
    fn into_value(self) -> Value {
        Value::List(self.into_iter().map(Value::Float).collect())
    }
}

impl Param for Vec<String> {
    const TYPE: ParamType = ParamType::StrList;
    fn from_value(name: &str, value: &Value) -> Result<Self, StageError> {
        list(name, value)?
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| StageError::Param(format!("parameter `{name}` must hold strings"))))
            .collect()
    }
    fn into_value(self) -> Value {
        Value::List(self.into_iter().map(Value::Str).collect())
    }
}

impl Param for BTreeMap<String, String> {
    const TYPE: ParamType = ParamType::StrMap;
    fn from_value(name: &str, value: &Value) -> Result<Self, StageError> {
        match value {
            Value::Table(t) => t
                .iter()
                .map(|(k, v)| {
                    v.as_str().map(|s| (k.clone(), s.to_owned())).ok_or_else(|| wrong(&format!("{name}.{k}"), "a string"))
                })
                .collect(),
            _ => Err(wrong(name, "a table")),
        }
    }
    fn into_value(self) -> Value {
        Value::Table(self.into_iter().map(|(k, v)| (k, Value::Str(v))).collect())
    }
}

/// A word enum, read from its word (declared with [`words!`](crate::words)).
pub fn word_from_value<W: Words>(name: &str, value: &Value) -> Result<W, StageError> {
    let word = value.as_str().ok_or_else(|| wrong(name, "a string"))?;
    W::parse(word).ok_or_else(|| {
        StageError::Param(format!("parameter `{name}`: unknown {} `{word}`, expected one of {:?}", W::NOUN, W::NAMES))
    })
}

/// A word enum that may be `"none"`: `None` is the word `"none"`, listed first.
impl<W: Words + Param> Param for Option<W> {
    const TYPE: ParamType = ParamType::Enum(W::NAMES_OR_NONE);
    fn from_value(name: &str, value: &Value) -> Result<Self, StageError> {
        match value.as_str() {
            Some(NONE_WORD) => Ok(None),
            _ => W::from_value(name, value).map(Some),
        }
    }
    fn into_value(self) -> Value {
        self.map_or_else(|| Value::Str(NONE_WORD.to_owned()), W::into_value)
    }
}

/// The word of an absent choice (`dataset = "none"`).
pub const NONE_WORD: &str = "none";

/// Declares a kind's parameter struct; each field is one parameter:
///
/// `name: Type [schema type] = how, "doc";`
///
/// - `Type` is what the kind reads ([`Param`]): `usize`, `f64`, `bool`, `String`,
///   `Vec<usize>`, a word enum, `Option<word enum>` (`"none"`), [`StageRef`], ...
/// - `[schema type]` refines the type's own [`Param::TYPE`] (a range, a reference mode);
/// - `how` is `required`, `default(value)` or `added(value)` (a parameter added after the
///   kind's results were first cached: it enters the key only away from its default;
///   see [`ParamSpec::added`]).
///
/// `..name: Group;` takes in the parameters of another parameter struct (a group several
/// kinds share, such as the optimizer's), as the field `name`.
///
/// The struct gets every field (references too, which kinds read through the context)
/// and implements [`KindParams`].
///
/// ```
/// use wfpipe_stages::kind::{ParamType as T, Params, Value};
/// use wfpipe_stages::declare::KindParams;
/// wfpipe_stages::kind_params! {
///     struct Demo {
///         steps: usize [T::POSITIVE_INT] = default(64), "Euler steps";
///         scale: f64 = added(0.0), "guidance weight";
///     }
/// }
/// let schema = Demo::schema();
/// assert_eq!(schema[0].default, Some(Value::Int(64)));
/// assert!(!schema[1].keyed_at_default);
/// let p = Params([("steps".to_owned(), Value::Int(8)), ("scale".to_owned(), Value::Float(0.5))].into());
/// let d = Demo::parse(&p).unwrap();
/// assert_eq!((d.steps, d.scale), (8, 0.5));
/// let zero = Params([("steps".to_owned(), Value::Int(0)), ("scale".to_owned(), Value::Float(0.5))].into());
/// assert_eq!(Demo::parse(&zero).err().unwrap().to_string(), "invalid parameter: `steps` must be an integer >= 1, got 0");
/// ```
#[macro_export]
macro_rules! kind_params {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident { $($body:tt)* }
    ) => {
        $crate::kind_params!(@munch [$(#[$meta])*] [$vis] $name [] $($body)*);
    };
    // One parameter.
    (@munch $meta:tt $vis:tt $name:ident [$($done:tt)*]
        $field:ident : $ty:ty $([$pt:expr])? = $how:ident $(($default:expr))? , $doc:literal ; $($rest:tt)*) => {
        $crate::kind_params!(@munch $meta $vis $name [$($done)* (param $field ($ty) ($($pt)?) $how ($($default)?) $doc)] $($rest)*);
    };
    // A group of parameters several kinds share, declared once in its own struct.
    (@munch $meta:tt $vis:tt $name:ident [$($done:tt)*] .. $field:ident : $ty:ty ; $($rest:tt)*) => {
        $crate::kind_params!(@munch $meta $vis $name [$($done)* (group $field ($ty))] $($rest)*);
    };
    (@munch [$(#[$meta:meta])*] [$vis:vis] $name:ident [$( ($what:ident $field:ident ($ty:ty) $($x:tt)*) )*]) => {
        $(#[$meta])*
        // Every parameter is a field, read or not: references are read through the context.
        #[allow(dead_code)]
        $vis struct $name {
            $( pub $field: $ty, )*
        }

        impl $crate::declare::KindParams for $name {
            fn schema() -> Vec<$crate::kind::ParamSpec> {
                let mut specs = Vec::new();
                $( $crate::kind_params!(@spec specs, $what $field ($ty) $($x)*); )*
                specs
            }
            fn parse(params: &$crate::kind::Params) -> Result<Self, $crate::kind::StageError> {
                let schema = <Self as $crate::declare::KindParams>::schema();
                let _ = &schema;
                Ok($name {
                    $( $field: $crate::kind_params!(@read params, schema, $what $field ($ty)), )*
                })
            }
        }
    };
    (@read $params:ident, $schema:ident, param $field:ident ($ty:ty)) => {
        $crate::declare::read::<$ty>($params, &$schema, stringify!($field))?
    };
    (@read $params:ident, $schema:ident, group $field:ident ($ty:ty)) => {
        <$ty as $crate::declare::KindParams>::parse($params)?
    };
    (@spec $specs:ident, group $field:ident ($ty:ty)) => {
        $specs.extend(<$ty as $crate::declare::KindParams>::schema())
    };
    (@spec $specs:ident, param $field:ident ($ty:ty) ($($pt:expr)?) $how:ident ($($default:expr)?) $doc:literal) => {
        $specs.push($crate::kind_params!(@how $how, stringify!($field), $crate::kind_params!(@ty $ty, ($($pt)?)), $ty, ($($default)?), $doc))
    };
    (@ty $ty:ty, ()) => { <$ty as $crate::declare::Param>::TYPE };
    (@ty $ty:ty, ($pt:expr)) => { $pt };
    (@how required, $name:expr, $pt:expr, $ty:ty, (), $doc:literal) => {
        $crate::kind::ParamSpec::required($name, $pt, $doc)
    };
    (@how default, $name:expr, $pt:expr, $ty:ty, ($default:expr), $doc:literal) => {
        $crate::kind::ParamSpec::with_default($name, $pt, <$ty as $crate::declare::Param>::into_value($default), $doc)
    };
    (@how added, $name:expr, $pt:expr, $ty:ty, ($default:expr), $doc:literal) => {
        $crate::kind::ParamSpec::added($name, $pt, <$ty as $crate::declare::Param>::into_value($default), $doc)
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::DatasetName;
    use crate::kind::ParamType as T;

    crate::kind_params! {
        struct Every {
            input: StageRef [T::Ref { mode: crate::kind::RefMode::Gather }] = required, "a reference";
            other: StageRef = default(StageRef::NONE), "an optional reference";
            dataset: Option<DatasetName> = default(None), "a task or none";
            task: DatasetName = default(DatasetName::Mnist), "a task";
            sizes: Vec<usize> = default(vec![784, 10, 10]), "a layout";
            flag: bool = added(false), "a switch";
        }
    }

    fn params(cells: &[(&str, Value)]) -> Params {
        Params(cells.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect())
    }

    #[test]
    fn the_schema_follows_the_declaration() {
        let schema = Every::schema();
        let names: Vec<&str> = schema.iter().map(|s| s.name).collect();
        assert_eq!(names, ["input", "other", "dataset", "task", "sizes", "flag"]);
        assert_eq!(schema[0].ty, T::Ref { mode: crate::kind::RefMode::Gather });
        assert_eq!(schema[0].default, None);
        assert_eq!(schema[1].default, Some(Value::Str(String::new())));
        assert_eq!(schema[2].ty, T::Enum(&["none", "uci-wdbc", "mnist", "fashion-mnist"]));
        assert_eq!(schema[2].default, Some(Value::Str("none".into())));
        assert_eq!(schema[3].ty, T::Enum(DatasetName::NAMES));
        assert_eq!(schema[3].default, Some(Value::Str("mnist".into())));
        assert_eq!(schema[4].default, Some(Value::List(vec![Value::Int(784), Value::Int(10), Value::Int(10)])));
        assert!(schema[4].keyed_at_default && !schema[5].keyed_at_default);
    }

    #[test]
    fn parsing_reads_types_and_refuses_what_the_schema_refuses() {
        let good = params(&[
            ("input", Value::Str("runs".into())),
            ("other", Value::Str(String::new())),
            ("dataset", Value::Str("uci-wdbc".into())),
            ("task", Value::Str("fashion-mnist".into())),
            ("sizes", Value::List(vec![Value::Int(3), Value::Int(2)])),
            ("flag", Value::Bool(true)),
        ]);
        let e = Every::parse(&good).expect("parses");
        assert_eq!(e.input, StageRef("runs".into()));
        assert!(!e.other.is_set());
        assert_eq!(e.dataset, Some(DatasetName::UciWdbc));
        assert_eq!(e.task, DatasetName::FashionMnist);
        assert_eq!(e.sizes, [3, 2]);
        assert!(e.flag);
        let mut none = good.clone();
        none.0.insert("dataset".into(), Value::Str("none".into()));
        assert_eq!(Every::parse(&none).expect("parses").dataset, None);
        let mut bad = good.clone();
        bad.0.insert("task".into(), Value::Str("cifar".into()));
        let msg = Every::parse(&bad).err().expect("an unknown word").to_string();
        assert_eq!(msg, r#"invalid parameter: parameter `task`: unknown dataset `cifar`, expected one of ["uci-wdbc", "mnist", "fashion-mnist"]"#);
        let mut missing = good.clone();
        missing.0.remove("flag");
        assert!(Every::parse(&missing).err().expect("missing").to_string().contains("`flag` is missing"));
    }
}
