// A reading-list widget: real TSX (TypeScript with JSX) for the code splitter test.
import React, { useMemo, useState } from "react";

export interface Book {
  isbn: string;
  title: string;
  author: string;
  pages: number;
  finished: boolean;
}

interface BookRowProps {
  book: Book;
  onToggle: (isbn: string) => void;
}

export function BookRow({ book, onToggle }: BookRowProps) {
  return (
    <li className={book.finished ? "book finished" : "book"}>
      <input type="checkbox" checked={book.finished} onChange={() => onToggle(book.isbn)} />
      <span className="title">{book.title}</span>
      <span className="author">by {book.author}</span>
      <span className="pages">{book.pages} pages</span>
    </li>
  );
}

export function pagesLeft(books: Book[]): number {
  return books.filter((b) => !b.finished).reduce((sum, b) => sum + b.pages, 0);
}

export function sortBooks(books: Book[], key: "title" | "author" | "pages"): Book[] {
  return [...books].sort((a, b) => {
    const x = a[key];
    const y = b[key];
    return x < y ? -1 : x > y ? 1 : 0;
  });
}

interface AddBookFormProps {
  onAdd: (book: Book) => void;
}

export function AddBookForm({ onAdd }: AddBookFormProps) {
  const [title, setTitle] = useState("");
  const [author, setAuthor] = useState("");
  const [pages, setPages] = useState(0);
  const valid = title.trim() !== "" && author.trim() !== "" && pages > 0;

  const submit = (event: React.FormEvent<HTMLFormElement>) => {
    event.preventDefault();
    if (!valid) {
      return;
    }
    onAdd({ isbn: `local-${Date.now()}`, title: title.trim(), author: author.trim(), pages, finished: false });
    setTitle("");
    setAuthor("");
    setPages(0);
  };

  return (
    <form className="add-book" onSubmit={submit}>
      <input placeholder="Title" value={title} onChange={(e) => setTitle(e.target.value)} />
      <input placeholder="Author" value={author} onChange={(e) => setAuthor(e.target.value)} />
      <input type="number" min={1} value={pages} onChange={(e) => setPages(Number(e.target.value))} />
      <button type="submit" disabled={!valid}>
        Add
      </button>
    </form>
  );
}

interface ReadingListProps {
  initial: Book[];
  title?: string;
}

export function ReadingList({ initial, title = "Reading list" }: ReadingListProps) {
  const [books, setBooks] = useState<Book[]>(initial);
  const [sortKey, setSortKey] = useState<"title" | "author" | "pages">("title");
  const sorted = useMemo(() => sortBooks(books, sortKey), [books, sortKey]);

  const toggle = (isbn: string) => {
    setBooks((current) => current.map((b) => (b.isbn === isbn ? { ...b, finished: !b.finished } : b)));
  };

  return (
    <section className="reading-list">
      <h2>{title}</h2>
      <label>
        Sort by{" "}
        <select value={sortKey} onChange={(e) => setSortKey(e.target.value as "title" | "author" | "pages")}>
          <option value="title">title</option>
          <option value="author">author</option>
          <option value="pages">pages</option>
        </select>
      </label>
      <ul>
        {sorted.map((book) => (
          <BookRow key={book.isbn} book={book} onToggle={toggle} />
        ))}
      </ul>
      <p className="summary">{pagesLeft(books)} pages left to read</p>
    </section>
  );
}

export default ReadingList;
