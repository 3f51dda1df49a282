package org.example.ledger;

import java.math.BigDecimal;
import java.time.LocalDate;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/** A household ledger: real Java for the code splitter test. */
public class Ledger {

    /** One booked amount; negative amounts are expenses. */
    public record Entry(LocalDate date, String category, BigDecimal amount, String memo) {
        public Entry {
            if (category == null || category.isBlank()) {
                throw new IllegalArgumentException("an entry needs a category");
            }
        }

        public boolean isExpense() {
            return amount.signum() < 0;
        }
    }

    public static class BudgetExceededException extends RuntimeException {
        public BudgetExceededException(String category, BigDecimal over) {
            super("budget for " + category + " exceeded by " + over);
        }
    }

    private final List<Entry> entries = new ArrayList<>();
    private final Map<String, BigDecimal> budgets = new TreeMap<>();

    public void setBudget(String category, BigDecimal monthlyLimit) {
        budgets.put(category, monthlyLimit);
    }

    public Entry book(LocalDate date, String category, String amount, String memo) {
        Entry entry = new Entry(date, category, new BigDecimal(amount), memo);
        entries.add(entry);
        BigDecimal limit = budgets.get(category);
        if (limit != null && entry.isExpense()) {
            BigDecimal spent = spentIn(category, date.getYear(), date.getMonthValue());
            if (spent.compareTo(limit) > 0) {
                throw new BudgetExceededException(category, spent.subtract(limit));
            }
        }
        return entry;
    }

    public BigDecimal balance() {
        BigDecimal total = BigDecimal.ZERO;
        for (Entry entry : entries) {
            total = total.add(entry.amount());
        }
        return total;
    }

    public BigDecimal spentIn(String category, int year, int month) {
        return entries.stream()
                .filter(e -> e.category().equals(category))
                .filter(e -> e.date().getYear() == year && e.date().getMonthValue() == month)
                .filter(Entry::isExpense)
                .map(e -> e.amount().negate())
                .reduce(BigDecimal.ZERO, BigDecimal::add);
    }

    public Map<String, BigDecimal> totalsByCategory() {
        Map<String, BigDecimal> totals = new TreeMap<>();
        for (Entry entry : entries) {
            totals.merge(entry.category(), entry.amount(), BigDecimal::add);
        }
        return totals;
    }

    public List<Entry> between(LocalDate from, LocalDate to) {
        List<Entry> found = new ArrayList<>();
        for (Entry entry : entries) {
            if (!entry.date().isBefore(from) && !entry.date().isAfter(to)) {
                found.add(entry);
            }
        }
        found.sort((a, b) -> a.date().compareTo(b.date()));
        return Collections.unmodifiableList(found);
    }

    public String report() {
        StringBuilder out = new StringBuilder("Balance: ").append(balance()).append('\n');
        for (Map.Entry<String, BigDecimal> total : totalsByCategory().entrySet()) {
            out.append(String.format("  %-12s %10s%n", total.getKey(), total.getValue()));
        }
        return out.toString();
    }

    public static void main(String[] args) {
        Ledger ledger = new Ledger();
        ledger.setBudget("groceries", new BigDecimal("300"));
        ledger.book(LocalDate.of(2024, 3, 1), "salary", "2500.00", "March pay");
        ledger.book(LocalDate.of(2024, 3, 2), "groceries", "-84.20", "market");
        ledger.book(LocalDate.of(2024, 3, 9), "groceries", "-61.75", "bakery and market");
        System.out.print(ledger.report());
    }
}
